"""Weight averaging (WiSE-FT, Wortsman et al. 2022): ``(1 - alpha) * w_base + alpha * mean_t(w_ft_t)``."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import TAILORING_METHODS, MethodOutput, TailoringMethod, TailorJob
from .merging import merge_task_vectors, task_weights


@dataclass
class AverageConfig:
    """``alpha``: weight of the (mean) fine-tuned model; 0 = base, 1 = fine-tuned."""

    alpha: float = 0.5

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha interpolates base (0) and fine-tuned (1): 0..1, got {self.alpha}")


def run(job: TailorJob, config: AverageConfig) -> MethodOutput:
    # start-up time: peft (about 2 s over torch) loads only when this merge runs, not when the methods are listed
    from peft.utils.merge_utils import task_arithmetic

    def combine(key, deltas):
        return task_arithmetic(deltas, task_weights(len(deltas), config.alpha / len(deltas), deltas[0].device))

    return merge_task_vectors(job, combine)


TAILORING_METHODS.register(TailoringMethod(
    "average", AverageConfig, run,
    description="WiSE-FT weight averaging: (1 - alpha) * base + alpha * mean of the fine-tuned models",
))
