"""How a zoo recipe's training stage steps: its settings, AdamW with a warm-up and cosine decay, one guarded step.

The recipes keep this loop rather than the fine-tuning engine's (:func:`unforget.training.trainer.finetune`): the
committed weights were trained with it (betas 0.9/0.98, cosine decay to 10%, clipping at 1.0, steps drawn from an
endless weighted stream rather than epochs), and the same seed must rebuild the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TrainingError


@dataclass
class StageSettings:
    steps: int
    lr: float
    batch_size: int
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01


def stage_optimizer(params: list[torch.nn.Parameter], settings: StageSettings) -> tuple[Any, Any]:
    """(AdamW, its schedule): linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 10%."""
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(settings.steps * settings.warmup_fraction))

    def factor(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, settings.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stage_step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: Any, schedule: Any, recipe: str,
               stage: str, step: int) -> None:
    """Backward, clip the gradient norm at 1.0, step; a loss that is not finite stops the recipe."""
    if not torch.isfinite(loss):
        raise TrainingError(f"{recipe} recipe, stage {stage}: the loss became {loss.item()} at step {step}; "
                            "lower that stage's lr")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
