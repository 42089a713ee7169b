"""Grafting: keep the base and take a chosen fraction of entries from the fine-tuned model(s).

Shared by Model Tailor and magnitude grafting, which differ only in how entries are scored and whether
the kept entries are compensated. Per task: score every considered entry, select the top ``sparsity``
fraction (over all considered tensors, or per tensor), optionally compensate, then combine the tasks'
patches (``overlap="score"``: an entry selected by several tasks goes to the one that scored it highest;
``"average"``: the mean of their changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from ..errors import ConfigError
from .base import MethodOutput, TailorJob, TensorStats
from .compensation import Solver, compensate, output_error
from .patch import TensorPatch
from .selection import TopKSelector, topk_mask, topk_threshold

Overlap = Literal["score", "average"]
# (task index, tensor key, delta in float32 on the job's device) -> scores, -inf where nothing changed
ScoreFunction = Callable[[int, str, torch.Tensor], torch.Tensor]


@dataclass
class GraftingPlan:
    sparsity: float
    overlap: Overlap = "score"
    per_layer: bool = False
    compensate: bool = False
    damp: float = 0.01
    solver: Solver = "exact"
    compensation_block_size: int = 128


def check_grafting_options(sparsity: float, overlap: str) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ConfigError(f"sparsity is the fraction of entries taken from the fine-tuned model: 0..1, got {sparsity}")
    if overlap not in ("score", "average"):
        raise ConfigError(f"overlap must be 'score' or 'average', got '{overlap}'")


def graft(job: TailorJob, plan: GraftingPlan, score: ScoreFunction) -> MethodOutput:
    device = torch.device(job.device)
    tasks = range(len(job.finetuned))
    scores: list[dict[str, torch.Tensor]] = [{} for _ in tasks]
    with job.seconds.timing("score"):
        for task in tasks:
            for key in job.keys:
                base = job.base.get(key).to(device, torch.float32)
                delta = job.finetuned[task].get(key).to(device, torch.float32) - base
                scores[task][key] = score(task, key, delta).to("cpu", torch.float32)

    numel = {key: job.base.info(key).numel for key in job.keys}
    selectors: list[TopKSelector | None] = [None for _ in tasks]
    if not plan.per_layer:
        total = round(plan.sparsity * sum(numel.values()))
        with job.seconds.timing("mask"):
            for task in tasks:
                threshold = topk_threshold(lambda t=task: (scores[t][k] for k in job.keys), total)
                selectors[task] = TopKSelector(threshold)

    tensors: dict[str, TensorPatch] = {}
    stats: dict[str, TensorStats] = {}
    for key in job.keys:
        base_tensor = job.base.get(key)
        base = base_tensor.to(device, torch.float32)
        stat = TensorStats(key=key, numel=numel[key])
        masks, values, task_scores = [], [], []
        for task in tasks:
            task_score = scores[task].pop(key)
            with job.seconds.timing("mask"):
                selector = selectors[task]
                if selector is None:
                    mask = topk_mask(task_score, round(plan.sparsity * numel[key]))
                else:
                    mask = selector.mask(task_score)
            mask = mask.to(device)
            finetuned = job.finetuned[task].get(key).to(device, torch.float32)
            new, before, after = _compensated(job, plan, task, key, finetuned, base, mask)
            masks.append(mask.reshape(-1))
            values.append(new.reshape(-1))
            task_scores.append(task_score.reshape(-1).to(device))
            stat.per_task.append(int(mask.sum()))
            stat.error_before.append(before)
            stat.error_after.append(after)
        with job.seconds.timing("merge"):
            patch = _combine(masks, values, task_scores, base.reshape(-1), plan.overlap, base_tensor)
        stat.changed = patch.size
        stat.overlap = int((torch.stack(masks).sum(0) > 1).sum()) if len(masks) > 1 else 0
        stats[key] = stat
        if patch.size:
            tensors[key] = patch
    return MethodOutput(tensors=tensors, stats=stats)


def _compensated(
    job: TailorJob, plan: GraftingPlan, task: int, key: str, finetuned: torch.Tensor, base: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, float | None, float | None]:
    """The task's tailored tensor (fine-tuned where masked, base elsewhere; compensated if asked) and the
    relative output errors before / after compensation."""
    grafted = torch.where(mask, finetuned, base)
    hessian = None
    if plan.compensate and job.calibration is not None:
        hessian = job.calibration[task].hessians.get(key)
    if hessian is None or finetuned.dim() != 2 or bool(mask.all()) or not bool(mask.any()):
        return grafted, None, None
    with job.seconds.timing("compensate"):
        hessian = hessian.to(finetuned.device)
        new = compensate(finetuned, base, mask, hessian, damp=plan.damp, solver=plan.solver,
                         block_size=plan.compensation_block_size)
        before = output_error(grafted, finetuned, hessian)
        after = output_error(new, finetuned, hessian)
    return new, before, after


def _combine(
    masks: list[torch.Tensor], values: list[torch.Tensor], scores: list[torch.Tensor], base: torch.Tensor,
    overlap: Overlap, base_tensor: torch.Tensor,
) -> TensorPatch:
    shape = tuple(base_tensor.shape)
    if len(masks) == 1:
        union, merged = masks[0], values[0]
    else:
        stacked_masks = torch.stack(masks)
        union = stacked_masks.any(0)
        stacked_values = torch.stack(values)
        if overlap == "score":
            # the task that scored the entry highest wins; equal scores go to the first task
            ranked = torch.where(stacked_masks, torch.stack(scores), torch.tensor(float("-inf"), device=base.device))
            winner = ranked.argmax(0, keepdim=True)
            merged = stacked_values.gather(0, winner).squeeze(0)
        else:
            count = stacked_masks.sum(0).clamp(min=1)
            merged = base + ((stacked_values - base) * stacked_masks).sum(0) / count
    dtype = base_tensor.dtype
    if bool(union.all()):
        return TensorPatch(shape, merged.to(dtype).cpu())
    indices = torch.nonzero(union).squeeze(1)
    return TensorPatch(shape, merged[indices].to(dtype).cpu(), indices.cpu())
