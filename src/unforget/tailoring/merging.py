"""Dense weight-space merging shared by the baselines (WiSE-FT averaging, task arithmetic, TIES, DARE).

Each baseline combines the task vectors ``tau_t = w_ft_t - w_base`` of one tensor into a merged delta
(with peft's ``peft.utils.merge_utils`` where it has the operation); the result ``w_base + merged`` is
computed in float32 and stored in the base's dtype. Only considered tensors change.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from ..errors import ConfigError
from .base import MethodOutput, TailorJob, TensorStats
from .patch import TensorPatch

# (tensor key, task vectors in float32) -> merged task vector
CombineDeltas = Callable[[str, list[torch.Tensor]], torch.Tensor]


def merge_task_vectors(job: TailorJob, combine: CombineDeltas) -> MethodOutput:
    device = torch.device(job.device)
    tensors: dict[str, TensorPatch] = {}
    stats: dict[str, TensorStats] = {}
    for key in job.keys:
        base_tensor = job.base.get(key)
        base = base_tensor.to(device, torch.float32)
        with job.seconds.timing("merge"):
            deltas = [ft.get(key).to(device, torch.float32) - base for ft in job.finetuned]
            new = (base + combine(key, deltas)).to(base_tensor.dtype).cpu()
            changed = new != base_tensor
            count = int(changed.sum())
        stats[key] = TensorStats(key=key, numel=base_tensor.numel(), changed=count,
                                 per_task=[int((d != 0).sum()) for d in deltas])
        if count == 0:
            continue
        item = base_tensor.element_size()
        if count * (8 + item) < base_tensor.numel() * item:  # sparse storage is smaller
            indices = torch.nonzero(changed.reshape(-1)).squeeze(1)
            tensors[key] = TensorPatch(tuple(base_tensor.shape), new.reshape(-1)[indices], indices)
        else:
            tensors[key] = TensorPatch(tuple(base_tensor.shape), new.reshape(-1))
    return MethodOutput(tensors=tensors, stats=stats)


def task_weights(count: int, weight: float, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.full((count,), float(weight), dtype=torch.float32, device=device)


def tensor_seed(seed: int, key: str) -> int:
    """A per-tensor seed that does not depend on which other tensors are merged or in what order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") & (2**63 - 1)


def check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density is the fraction of each task vector kept: (0, 1], got {density}")
