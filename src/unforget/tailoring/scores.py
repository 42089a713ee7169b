"""Model Tailor's per-parameter scores: salience, sensitivity, and their fusion.

- salience: the size of the fine-tuning change, ``|w_ft - w_base|``;
- sensitivity: the target-task loss increase if that change were reverted, a second-order (OBS-style)
  estimate with a diagonal Fisher ``F`` (mean squared gradients at the fine-tuned weights):
  ``0.5 * F * delta**2``, plus optionally the first-order term ``-g * delta`` (reverting moves the weight
  by ``-delta``);
- fusion: ``fusion * z(salience) + (1 - fusion) * z(sensitivity)`` with z-scores per row inside blocks of
  ``block_size`` columns, as the Model Tailor reference code does (0.8 / 0.2, 128-column blocks).

Entries the fine-tuning did not change score ``-inf``: grafting them would change nothing.
"""

from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["block", "tensor", "none"]


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A 2-D view: rows = first dimension (output features), columns = the rest (a vector is one row)."""
    if tensor.dim() == 0:
        return tensor.reshape(1, 1)
    if tensor.dim() == 1:
        return tensor.reshape(1, -1)
    return tensor.reshape(tensor.shape[0], -1)


def salience(delta: torch.Tensor) -> torch.Tensor:
    return delta.abs()


def sensitivity(
    delta: torch.Tensor, fisher: torch.Tensor, gradient: torch.Tensor | None = None
) -> torch.Tensor:
    """Estimated loss increase from reverting ``delta``: ``0.5 F delta^2`` (``- g delta`` with a gradient)."""
    score = 0.5 * fisher * delta.square()
    if gradient is not None:
        score = score - gradient * delta
    return score


def zscore(values: torch.Tensor, *, normalize: Normalization = "block", block_size: int = 128) -> torch.Tensor:
    """Standardise scores so salience and sensitivity are comparable; constant groups become 0."""
    if normalize == "none":
        return values
    matrix = as_matrix(values.float())
    if normalize == "tensor":
        return _standardize(matrix.reshape(-1)).reshape(values.shape)
    if normalize != "block":
        raise ValueError(f"unknown normalisation '{normalize}' (block, tensor, none)")
    rows, columns = matrix.shape
    full = columns - columns % block_size
    out = torch.empty_like(matrix)
    if full:  # all whole blocks at once: (rows, blocks, block_size)
        blocks = matrix[:, :full].reshape(rows, full // block_size, block_size)
        out[:, :full] = _standardize(blocks).reshape(rows, full)
    if full < columns:
        out[:, full:] = _standardize(matrix[:, full:])
    return out.reshape(values.shape)


def _standardize(groups: torch.Tensor) -> torch.Tensor:
    """z-score along the last dimension (unbiased std, as torch.std); a group with no spread maps to zeros."""
    if groups.shape[-1] < 2:
        return torch.zeros_like(groups)
    std, mean = torch.std_mean(groups, dim=-1, keepdim=True)
    return torch.where(std > 0, (groups - mean) / torch.where(std > 0, std, 1.0), torch.zeros_like(groups))


def fused_score(
    delta: torch.Tensor,
    *,
    fusion: float,
    fisher: torch.Tensor | None = None,
    gradient: torch.Tensor | None = None,
    normalize: Normalization = "block",
    block_size: int = 128,
) -> torch.Tensor:
    """``fusion * z(salience) + (1 - fusion) * z(sensitivity)``; unchanged entries get ``-inf``."""
    delta = delta.float()
    score = zscore(salience(delta), normalize=normalize, block_size=block_size)
    if fusion < 1.0:
        if fisher is None:
            raise ValueError("a sensitivity term (fusion < 1) needs the Fisher diagonal")
        sens = sensitivity(delta, fisher.float(), None if gradient is None else gradient.float())
        score = fusion * score + (1.0 - fusion) * zscore(sens, normalize=normalize, block_size=block_size)
    score = torch.nan_to_num(score, nan=0.0, posinf=torch.finfo(torch.float32).max)
    return score.masked_fill(delta == 0, float("-inf"))
