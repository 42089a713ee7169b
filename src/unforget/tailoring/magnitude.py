"""Magnitude grafting: take the ``sparsity`` fraction of entries that fine-tuning changed most (``|delta|``),
keep the base elsewhere. Model Tailor without sensitivity, normalisation or compensation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TAILORING_METHODS, MethodOutput, TailoringMethod, TailorJob
from .grafting import GraftingPlan, Overlap, check_grafting_options, graft
from .scores import fused_score


@dataclass
class MagnitudeConfig:
    sparsity: float = 0.1
    overlap: Overlap = "score"
    per_layer: bool = False

    def validate(self) -> None:
        check_grafting_options(self.sparsity, self.overlap)


def run(job: TailorJob, config: MagnitudeConfig) -> MethodOutput:
    def score(task: int, key: str, delta: torch.Tensor) -> torch.Tensor:
        return fused_score(delta, fusion=1.0, normalize="none")

    return graft(job, GraftingPlan(config.sparsity, config.overlap, config.per_layer), score)


TAILORING_METHODS.register(TailoringMethod(
    "magnitude", MagnitudeConfig, run, sweeps_sparsity=True,
    description="graft the fraction of fine-tuned weights with the largest change |w_ft - w_base|",
))
