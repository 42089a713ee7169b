"""What decides tiny-llava (the recipe, stored as ``recipe.json`` beside the weights) and what its build measured."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...models.build import LlavaShape
from ..data import EMBEDDED_SETS
from ..stages import StageSettings


@dataclass
class TinyLlavaRecipe:
    """Everything that decides the model; stored as ``recipe.json`` next to the weights."""

    seed: int = 0
    datasets: tuple[str, ...] = EMBEDDED_SETS
    train_per_set: int = 4000  # cap on train samples used per set (mnist has 10,000)
    vocab_size: int = 1024
    shape: LlavaShape = field(default_factory=lambda: LlavaShape(
        image_size=32, patch_size=8, vision_hidden=128, vision_layers=3, vision_heads=4, vision_intermediate=256,
        text_hidden=192, text_layers=4, text_heads=4, text_kv_heads=4, text_intermediate=512, max_positions=512,
        projection_dim=128,
    ))
    clip_text_hidden: int = 96
    clip_text_layers: int = 2
    clip_text_heads: int = 4
    clip_text_intermediate: int = 384
    clip_text_positions: int = 64
    clip: StageSettings = field(default_factory=lambda: StageSettings(steps=1500, lr=2e-3, batch_size=256))
    align: StageSettings = field(default_factory=lambda: StageSettings(steps=500, lr=1e-3, batch_size=32))
    instruct: StageSettings = field(default_factory=lambda: StageSettings(steps=2500, lr=1e-3, batch_size=16))
    # Instruction-mix weight per dataset (default 1): the harder sets get more steps.
    instruct_weights: dict[str, float] = field(default_factory=dict)
    threads: int = 2
    eval_limit: int | None = 400  # test samples per set in the build-time accuracy check (None: all)
    save_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TinyLlavaRecipe":
        """The inverse of :meth:`to_dict` (``recipe.json`` -> the recipe that built it)."""
        nested = {"shape": LlavaShape, "clip": StageSettings, "align": StageSettings, "instruct": StageSettings}
        kwargs = {k: nested[k](**v) if k in nested else v for k, v in values.items()}
        kwargs["datasets"] = tuple(kwargs.get("datasets", EMBEDDED_SETS))
        return cls(**kwargs)


@dataclass
class BuildReport:
    """What the build measured: seconds per stage, final losses, parameter counts and accuracies."""

    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # generate + exact match, test split
    zero_shot: dict[str, float] = field(default_factory=dict)  # the encoder's zero-shot accuracy, test split
    eval_counts: dict[str, int] = field(default_factory=dict)
