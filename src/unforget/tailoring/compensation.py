"""Decorating the patch: adjust the kept fine-tuned weights of a linear layer so that its outputs on the
calibration activations stay close to the fine-tuned layer's, after the other entries went back to the base.

The objective is the layer's output error ``||(W - W_ft) X||^2 = tr(D H D^T)`` with the layer-input
Hessian ``H = 2 X X^T / n``, damped by ``damp * mean(diag H)``. Reverted entries are fixed at the base;
kept entries are free. Two solvers:

- ``"exact"`` (default): the OBS solution for the whole mask at once, row by row
  ``d_K = -H_KK^-1 H_KR d_R`` (batched Cholesky solves). It is the optimum of the damped objective, so the
  output error can never exceed that of the uncompensated graft.
- ``"sequential"``: the SparseGPT column-by-column update (Frantar & Alistarh, 2023) used by the Model
  Tailor reference code: each reverted entry's error is spread over the not-yet-visited columns through
  the upper Cholesky factor of ``H^-1``. Faster on GPU for wide layers, but greedy: it can raise the
  error on some layers. (The public Model Tailor code, llava/train/sparsegpt.py, also adds the propagated
  error where SparseGPT subtracts it; the OBS sign is used here.)

Either way reverted entries end exactly at the base values; only kept entries move.
"""

from __future__ import annotations

from typing import Literal

import torch


def damped_inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped ``H^-1`` (the sequential solver's update directions)."""
    factor = torch.linalg.cholesky(damped_hessian(hessian, damp))
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)


Solver = Literal["exact", "sequential"]


def compensate(
    finetuned: torch.Tensor,
    base: torch.Tensor,
    keep: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damp: float = 0.01,
    solver: Solver = "exact",
    block_size: int = 128,
) -> torch.Tensor:
    """Weights where ``keep`` is False equal ``base``; kept entries start at ``finetuned`` and absorb the
    output error of the reverted ones. All of shape (out_features, in_features); returns float32.
    ``block_size`` is the column block of the sequential solver."""
    if solver == "exact":
        return _compensate_exact(finetuned, base, keep, hessian, damp)
    if solver == "sequential":
        return _compensate_sequential(finetuned, base, keep, hessian, damp, block_size)
    raise ValueError(f"unknown compensation solver '{solver}' (exact, sequential)")


def damped_hessian(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """``H + damp * mean(diag H) I``, dead inputs (zero diagonal) given a unit diagonal first."""
    h = hessian.to(torch.float32).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    idx = torch.arange(h.shape[0], device=h.device)
    h[idx, idx] += damp * torch.diagonal(h).mean()
    return h


def _compensate_exact(
    finetuned: torch.Tensor, base: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor, damp: float,
    max_batch_bytes: int = 1 << 28,
) -> torch.Tensor:
    weight = finetuned.to(torch.float32)
    device = weight.device
    base = base.to(device=device, dtype=torch.float32)
    keep = keep.to(device)
    h = damped_hessian(hessian.to(device), damp)
    out = torch.where(keep, weight, base)
    kept_per_row = keep.sum(1)
    if not bool(kept_per_row.any()):
        return out
    # H d for each row, d = the reverted entries' change (zero at kept entries); its kept part is H_KR d_R
    pull = torch.where(keep, torch.zeros_like(base), base - weight) @ h
    # rows in order of kept count, so that each batch of solves is padded to a similar size
    row_order = torch.argsort(kept_per_row, stable=True)
    counts = kept_per_row[row_order].tolist()
    start = 0
    while start < len(counts):
        stop = _batch_end(counts, start, max_batch_bytes)
        width = counts[stop - 1]
        rows = row_order[start:stop]
        start = stop
        if width == 0:
            continue
        row_keep = keep[rows]
        # each row's kept columns first, padded with reverted ones that the solve leaves at zero
        idx = torch.argsort(row_keep.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
        ok = torch.arange(width, device=device).unsqueeze(0) < kept_per_row[rows].unsqueeze(1)
        system = h[idx.unsqueeze(2), idx.unsqueeze(1)]
        system = torch.where(ok.unsqueeze(2) & ok.unsqueeze(1), system, torch.zeros((), device=device))
        system = system + torch.diag_embed((~ok).float())
        rhs = -(pull[rows].gather(1, idx) * ok)
        solution = torch.cholesky_solve(rhs.unsqueeze(2), torch.linalg.cholesky(system)).squeeze(2)
        out[rows] = out[rows].scatter_add(1, idx, solution * ok)
    return out


def _batch_end(counts: list[int], start: int, max_bytes: int) -> int:
    """End of a batch of rows (sorted by kept count) whose padded systems fit in ``max_bytes``."""
    end = min(len(counts), start + max(1, max_bytes // (4 * max(1, counts[start]) ** 2)))
    while end - start > 1 and 4 * (end - start) * counts[end - 1] ** 2 > max_bytes:
        end = start + (end - start) // 2
    return end


def _compensate_sequential(
    finetuned: torch.Tensor, base: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor, damp: float,
    block_size: int,
) -> torch.Tensor:
    weight = finetuned.to(torch.float32).clone()
    base = base.to(device=weight.device, dtype=torch.float32)
    keep = keep.to(weight.device)
    hinv = damped_inverse_cholesky(hessian.to(weight.device), damp)
    columns = weight.shape[1]
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = weight[:, start:stop].clone()
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:stop, start:stop]
        for i in range(stop - start):
            column = block[:, i]
            target = torch.where(keep[:, start + i], column, base[:, start + i])
            error = (column - target) / hinv_block[i, i]
            block[:, i:] -= error.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
            block[:, i] = target  # exact: reverted entries must be the base bit for bit
            errors[:, i] = error
        weight[:, start:stop] = block
        weight[:, stop:] -= errors @ hinv[start:stop, stop:]
    return weight


def output_error(weight: torch.Tensor, reference: torch.Tensor, hessian: torch.Tensor) -> float:
    """Relative output error ``||(W - W_ref) X||^2 / ||W_ref X||^2``, computed from ``H ~ X X^T``."""
    hessian = hessian.to(torch.float32)
    diff = (weight.to(hessian.device, torch.float32) - reference.to(hessian.device, torch.float32))
    ref = reference.to(hessian.device, torch.float32)
    num = float(((diff @ hessian) * diff).sum())
    den = float(((ref @ hessian) * ref).sum())
    return num / den if den > 0 else num
