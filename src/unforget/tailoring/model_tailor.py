"""Model Tailor (Zhu et al., ICML 2024, arXiv 2402.12048): graft a small patch of fine-tuned weights onto
the pre-trained model, chosen by fused salience and sensitivity, then compensate ("decorate") it.

Reference settings follow the public code (didizhu-zju/Model-Tailor, llava/train/sparsegpt.py): salience
and sensitivity fused 0.8 / 0.2 after per-row z-scores in 128-column blocks, damping 1% of the mean
Hessian diagonal. Differences from that code: sensitivity is the diagonal-Fisher estimate of the loss
increase from reverting an entry (as the paper describes), the selection is exact over all considered
tensors (or per tensor), and compensation solves for the whole mask at once by default (the reference's
SparseGPT column sweep, with the OBS sign, is ``compensation_solver="sequential"``; see
:mod:`unforget.tailoring.compensation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import TAILORING_METHODS, CalibrationNeeds, MethodOutput, TailoringMethod, TailorJob
from .compensation import Solver
from .grafting import GraftingPlan, Overlap, check_grafting_options, graft
from .scores import Normalization, fused_score


@dataclass
class ModelTailorConfig:
    """``sparsity``: fraction of the considered entries taken from the fine-tuned model (the patch size);
    ``fusion``: weight of salience against sensitivity; ``compensate``: decorate the patch (needs
    calibration inputs); ``overlap``: how tasks share an entry; ``per_layer``: top-k per tensor instead of
    over all; ``normalize`` / ``block_size``: z-scores per row in column blocks ("block"), per tensor, or
    raw ("none"); ``first_order``: add ``-g * delta`` to the sensitivity; ``damp``: Hessian damping as a
    fraction of its mean diagonal; ``compensation_solver``: "exact" (whole-mask OBS optimum, never worse
    than no compensation) or "sequential" (SparseGPT column sweep of the reference code, in blocks of
    ``compensation_block_size`` columns)."""

    sparsity: float = 0.1
    fusion: float = 0.8
    compensate: bool = True
    overlap: Overlap = "score"
    per_layer: bool = False
    normalize: Normalization = "block"
    block_size: int = 128
    first_order: bool = False
    damp: float = 0.01
    compensation_solver: Solver = "exact"
    compensation_block_size: int = 128

    def validate(self) -> None:
        check_grafting_options(self.sparsity, self.overlap)
        if not 0.0 <= self.fusion <= 1.0:
            raise ConfigError(f"fusion weighs salience against sensitivity: 0..1, got {self.fusion}")
        if self.normalize not in ("block", "tensor", "none"):
            raise ConfigError(f"normalize must be 'block', 'tensor' or 'none', got '{self.normalize}'")
        if self.block_size < 2 or self.compensation_block_size < 1:
            raise ConfigError("block_size must be >= 2 and compensation_block_size >= 1")
        if self.compensation_solver not in ("exact", "sequential"):
            raise ConfigError(
                f"compensation_solver must be 'exact' or 'sequential', got '{self.compensation_solver}'"
            )
        if self.damp <= 0:
            raise ConfigError(f"damp must be > 0 (e.g. 0.01), got {self.damp}")


def needs(config: ModelTailorConfig) -> CalibrationNeeds:
    sensitivity = config.fusion < 1.0 and config.sparsity > 0
    return CalibrationNeeds(
        fisher=sensitivity,
        first_order=sensitivity and config.first_order,
        hessians=config.compensate and 0 < config.sparsity < 1,
    )


def run(job: TailorJob, config: ModelTailorConfig) -> MethodOutput:
    use_sensitivity = needs(config).fisher  # at sparsity 0 nothing is selected: no scores needed

    def score(task: int, key: str, delta: torch.Tensor) -> torch.Tensor:
        fisher = gradient = None
        if use_sensitivity and job.calibration is not None:
            stats = job.calibration[task]
            # consumed here: the scores take the Fisher's place in memory
            fisher = stats.fisher.pop(key).to(delta.device)
            if config.first_order:
                gradient = stats.gradient.pop(key).to(delta.device)
        return fused_score(
            delta, fusion=config.fusion if use_sensitivity else 1.0, fisher=fisher, gradient=gradient,
            normalize=config.normalize, block_size=config.block_size,
        )

    plan = GraftingPlan(
        sparsity=config.sparsity, overlap=config.overlap, per_layer=config.per_layer,
        compensate=config.compensate, damp=config.damp, solver=config.compensation_solver,
        compensation_block_size=config.compensation_block_size,
    )
    return graft(job, plan, score)


TAILORING_METHODS.register(TailoringMethod(
    "model-tailor", ModelTailorConfig, run, needs, sweeps_sparsity=True,
    description="Model Tailor: graft the top fused salience/sensitivity fraction of fine-tuned weights, compensated",
), paper="arXiv:2402.12048")
