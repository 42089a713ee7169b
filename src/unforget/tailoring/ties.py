"""TIES-merging (Yadav et al., NeurIPS 2023): trim each task vector to its top ``density`` magnitudes,
elect a sign per entry, average the entries that agree with it, scale by ``scaling_coef``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .base import TAILORING_METHODS, MethodOutput, TailoringMethod, TailorJob
from .merging import check_density, merge_task_vectors, task_weights


@dataclass
class TiesConfig:
    """``density``: fraction of each task vector kept (by magnitude, per tensor); ``majority_sign``:
    "total" (sign of the summed values) or "frequency" (most common sign)."""

    density: float = 0.2
    scaling_coef: float = 1.0
    majority_sign: Literal["total", "frequency"] = "total"

    def validate(self) -> None:
        check_density(self.density)
        if self.majority_sign not in ("total", "frequency"):
            raise ConfigError(f"majority_sign must be 'total' or 'frequency', got '{self.majority_sign}'")


def run(job: TailorJob, config: TiesConfig) -> MethodOutput:
    # start-up time: peft (about 2 s over torch) loads only when this merge runs, not when the methods are listed
    from peft.utils.merge_utils import ties

    def combine(key, deltas):
        weights = task_weights(len(deltas), config.scaling_coef, deltas[0].device)
        return ties(deltas, weights, config.density, majority_sign_method=config.majority_sign)

    return merge_task_vectors(job, combine)


TAILORING_METHODS.register(TailoringMethod(
    "ties", TiesConfig, run,
    description="TIES-merging: trim to top-density magnitudes, elect signs, disjoint mean",
))
