"""Task arithmetic (Ilharco et al., ICLR 2023): ``w_base + scaling_coef * sum_t (w_ft_t - w_base)``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import TAILORING_METHODS, MethodOutput, TailoringMethod, TailorJob
from .merging import merge_task_vectors, task_weights


@dataclass
class TaskArithmeticConfig:
    """``scaling_coef``: lambda, the weight of every task vector (tuned on held-out data in the paper)."""

    scaling_coef: float = 1.0


def run(job: TailorJob, config: TaskArithmeticConfig) -> MethodOutput:
    # start-up time: peft (about 2 s over torch) loads only when this merge runs, not when the methods are listed
    from peft.utils.merge_utils import task_arithmetic

    def combine(key, deltas):
        return task_arithmetic(deltas, task_weights(len(deltas), config.scaling_coef, deltas[0].device))

    return merge_task_vectors(job, combine)


TAILORING_METHODS.register(TailoringMethod(
    "task-arithmetic", TaskArithmeticConfig, run,
    description="task arithmetic: base + lambda * sum of task vectors",
))
