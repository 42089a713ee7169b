"""DARE (Yu et al., ICML 2024): drop each task-vector entry with probability ``1 - density``, rescale
the survivors by ``1 / density``, then add them up (task arithmetic) or TIES-merge them
(``sign_consensus``). Seeded per tensor, so a run is reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TAILORING_METHODS, MethodOutput, TailoringMethod, TailorJob
from .merging import check_density, merge_task_vectors, task_weights, tensor_seed


@dataclass
class DareConfig:
    """``density``: probability of keeping each task-vector entry; ``rescale``: divide survivors by it."""

    density: float = 0.1
    rescale: bool = True
    seed: int = 0
    scaling_coef: float = 1.0
    sign_consensus: bool = False

    def validate(self) -> None:
        check_density(self.density)


def run(job: TailorJob, config: DareConfig) -> MethodOutput:
    # start-up time: peft (about 2 s over torch) loads only when this merge runs, not when the methods are listed
    from peft.utils.merge_utils import (
        calculate_majority_sign_mask,
        dare_linear,
        dare_ties,
        disjoint_merge,
        prune,
        task_arithmetic,
    )

    def combine(key, deltas):
        device = deltas[0].device
        weights = task_weights(len(deltas), config.scaling_coef, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(tensor_seed(config.seed, key))
            if config.rescale:
                merge = dare_ties if config.sign_consensus else dare_linear
                return merge(deltas, weights, config.density)
            pruned = [prune(d, config.density, method="random", rescale=False) for d in deltas]
        if not config.sign_consensus:
            return task_arithmetic(pruned, weights)
        stacked = torch.stack(pruned)
        majority = calculate_majority_sign_mask(stacked, method="total")
        return disjoint_merge(stacked * weights.view(-1, *([1] * (stacked.dim() - 1))), majority)

    return merge_task_vectors(job, combine)


TAILORING_METHODS.register(TailoringMethod(
    "dare", DareConfig, run,
    description="DARE: random drop with rescale of task vectors, then task arithmetic (or TIES with sign_consensus)",
))
