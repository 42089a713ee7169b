"""Decorating the patch: adjust the kept fine-tuned weights of a linear layer so that its outputs on the
calibration activations stay close to the fine-tuned layer's, after the other entries went back to the base.

This is the OBS / SparseGPT column-by-column update (Frantar & Alistarh, 2023) with a fixed mask and the
base weights as the "pruned" values: with the layer-input Hessian ``H = 2 X X^T / n`` (damped by
``damp * mean(diag H)``), each reverted entry's error is spread over the not-yet-visited columns of its
row through the upper Cholesky factor of ``H^-1``. Reverted entries end exactly at the base values; only
kept entries move.

Note: the public Model Tailor code (llava/train/sparsegpt.py) adds the propagated error where SparseGPT
subtracts it; the OBS update subtracts, and only then does the output error decrease.
"""

from __future__ import annotations

import torch


def damped_inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``, dead inputs given a unit diagonal."""
    h = hessian.to(torch.float32).clone()
    diagonal = torch.diagonal(h)
    dead = diagonal == 0
    h[dead, dead] = 1.0
    mean_diag = torch.diagonal(h).mean()
    idx = torch.arange(h.shape[0], device=h.device)
    h[idx, idx] += damp * mean_diag
    factor = torch.linalg.cholesky(h)
    inverse = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(inverse, upper=True)


def compensate(
    finetuned: torch.Tensor,
    base: torch.Tensor,
    keep: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damp: float = 0.01,
    block_size: int = 128,
) -> torch.Tensor:
    """Weights where ``keep`` is False equal ``base``; kept entries start at ``finetuned`` and absorb the
    output error of the reverted ones. All of shape (out_features, in_features); returns float32."""
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
