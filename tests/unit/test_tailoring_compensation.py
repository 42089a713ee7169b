"""Compensation (OBS / SparseGPT update with a fixed mask): it must reduce the layer-output error."""

from __future__ import annotations

import torch

from unforget.tailoring.compensation import compensate, output_error
from unforget.tailoring.selection import topk_mask


def layer(seed: int, rows: int = 24, cols: int = 96, samples: int = 300):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=g) * 0.3
    x = torch.randn(samples, cols, generator=g) @ mixing + torch.randn(samples, cols, generator=g)  # correlated inputs
    base = torch.randn(rows, cols, generator=g)
    finetuned = base + 0.1 * torch.randn(rows, cols, generator=g)
    return x, base, finetuned, 2 * x.T @ x / samples


def test_compensation_reduces_reconstruction_error_on_random_layers():
    for seed in range(4):
        x, base, finetuned, hessian = layer(seed)
        keep = topk_mask((finetuned - base).abs(), round(0.1 * base.numel()))
        grafted = torch.where(keep, finetuned, base)
        tailored = compensate(finetuned, base, keep, hessian, block_size=32)
        before = torch.linalg.norm(grafted @ x.T - finetuned @ x.T)
        after = torch.linalg.norm(tailored @ x.T - finetuned @ x.T)
        assert after < 0.99 * before
        assert torch.equal(tailored[~keep], base[~keep])  # reverted entries are the base, bit for bit
        assert output_error(tailored, finetuned, hessian) < output_error(grafted, finetuned, hessian)


def test_nothing_reverted_means_nothing_moves():
    _, base, finetuned, hessian = layer(0)
    everything = torch.ones_like(base, dtype=torch.bool)
    assert torch.equal(compensate(finetuned, base, everything, hessian), finetuned)


def test_single_reverted_entry_matches_the_least_squares_optimum():
    """Reverting w[0, 0] with every later entry of row 0 free: OBS gives the exact least-squares update
    d_F = -H_FF^-1 H_F0 d_0 (tiny damping)."""
    x, base, finetuned, hessian = layer(1, rows=3, cols=12, samples=200)
    keep = torch.ones_like(base, dtype=torch.bool)
    keep[0, 0] = False
    tailored = compensate(finetuned, base, keep, hessian, damp=1e-7, block_size=4).double()
    h = hessian.double()
    d0 = float(base[0, 0] - finetuned[0, 0])
    expected = -torch.linalg.solve(h[1:, 1:], h[1:, 0]) * d0
    assert torch.allclose(tailored[0, 1:] - finetuned[0, 1:].double(), expected, rtol=1e-3, atol=1e-5)
    assert torch.equal(tailored[1:].float(), finetuned[1:])  # other rows untouched
