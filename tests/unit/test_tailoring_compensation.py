"""Compensation with a fixed mask (exact OBS solve, SparseGPT sweep): it must reduce the layer-output error."""

from __future__ import annotations

import torch

import pytest

from unforget.tailoring.compensation import compensate, damped_hessian, output_error
from unforget.tailoring.selection import topk_mask


def layer(seed: int, rows: int = 24, cols: int = 96, samples: int = 300):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=g) * 0.3
    x = torch.randn(samples, cols, generator=g) @ mixing + torch.randn(samples, cols, generator=g)  # correlated inputs
    base = torch.randn(rows, cols, generator=g)
    finetuned = base + 0.1 * torch.randn(rows, cols, generator=g)
    return x, base, finetuned, 2 * x.T @ x / samples


@pytest.mark.parametrize("solver", ["exact", "sequential"])
def test_compensation_reduces_reconstruction_error_on_random_layers(solver):
    for seed in range(4):
        x, base, finetuned, hessian = layer(seed)
        keep = topk_mask((finetuned - base).abs(), round(0.1 * base.numel()))
        grafted = torch.where(keep, finetuned, base)
        tailored = compensate(finetuned, base, keep, hessian, solver=solver, block_size=32)
        before = torch.linalg.norm(grafted @ x.T - finetuned @ x.T)
        after = torch.linalg.norm(tailored @ x.T - finetuned @ x.T)
        assert after < 0.99 * before
        assert torch.equal(tailored[~keep], base[~keep])  # reverted entries are the base, bit for bit
        assert output_error(tailored, finetuned, hessian) < output_error(grafted, finetuned, hessian)


def test_exact_solver_is_the_per_row_least_squares_optimum():
    """Kept entries K of each row: d_K = -(H_KK)^-1 H_KR d_R on the damped Hessian, even when rows keep
    very different numbers of entries (including none)."""
    x, base, finetuned, hessian = layer(2, rows=10, cols=40, samples=120)
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(10, 40, generator=g) < torch.linspace(0, 0.6, 10).unsqueeze(1)
    tailored = compensate(finetuned, base, keep, hessian, damp=0.01).double()
    h = damped_hessian(hessian, 0.01).double()
    for row in range(10):
        kept, reverted = keep[row].nonzero().squeeze(1), (~keep[row]).nonzero().squeeze(1)
        if kept.numel() == 0:
            assert torch.equal(tailored[row].float(), base[row])
            continue
        change = (base[row, reverted] - finetuned[row, reverted]).double()
        expected = -torch.linalg.solve(h[kept][:, kept], h[kept][:, reverted] @ change)
        assert torch.allclose(tailored[row, kept] - finetuned[row, kept].double(), expected, atol=1e-5)


def test_exact_solver_never_does_worse_than_no_compensation_on_rank_deficient_inputs():
    for seed in range(6):
        x, base, finetuned, hessian = layer(seed, rows=12, cols=64, samples=16)  # 16 tokens, 64 inputs
        keep = topk_mask((finetuned - base).abs(), round(0.05 * base.numel()))
        grafted = torch.where(keep, finetuned, base)
        tailored = compensate(finetuned, base, keep, hessian)
        assert output_error(tailored, finetuned, hessian) <= output_error(grafted, finetuned, hessian)


def test_sequential_solver_single_reverted_entry_matches_the_least_squares_optimum():
    """Reverting w[0, 0] with every later entry of row 0 free: the SparseGPT sweep gives the exact
    least-squares update d_F = -H_FF^-1 H_F0 d_0 (tiny damping)."""
    x, base, finetuned, hessian = layer(1, rows=3, cols=12, samples=200)
    keep = torch.ones_like(base, dtype=torch.bool)
    keep[0, 0] = False
    tailored = compensate(finetuned, base, keep, hessian, damp=1e-7, solver="sequential", block_size=4).double()
    h = hessian.double()
    d0 = float(base[0, 0] - finetuned[0, 0])
    expected = -torch.linalg.solve(h[1:, 1:], h[1:, 0]) * d0
    assert torch.allclose(tailored[0, 1:] - finetuned[0, 1:].double(), expected, rtol=1e-3, atol=1e-5)
    assert torch.equal(tailored[1:].float(), finetuned[1:])  # other rows untouched


@pytest.mark.parametrize("solver", ["exact", "sequential"])
def test_all_kept_changes_nothing_and_none_kept_gives_the_base(solver):
    _, base, finetuned, hessian = layer(0)
    everything = torch.ones_like(base, dtype=torch.bool)
    assert torch.equal(compensate(finetuned, base, everything, hessian, solver=solver), finetuned)
    nothing = torch.zeros_like(everything)
    assert torch.equal(compensate(finetuned, base, nothing, hessian, solver=solver), base)
