"""What decides smol-llava's trained parts (the recipe, stored in ``smol_llava.json``) and what its recipe
measured."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...models.zoo.smol_llava_assembly import AssemblySpec, spec_dict
from ..data import EMBEDDED_SETS
from ..stages import StageSettings
from .vocabulary import VocabularySettings


@dataclass
class SmolLlavaRecipe:
    """Everything that decides the trained parts; stored in ``smol_llava.json``."""

    seed: int = 0
    datasets: tuple[str, ...] = EMBEDDED_SETS
    train_per_set: int = 600
    spec: AssemblySpec = field(default_factory=lambda: AssemblySpec(image_size=84))
    vocabulary: VocabularySettings = field(default_factory=lambda: VocabularySettings())
    align: StageSettings = field(default_factory=lambda: StageSettings(steps=40, lr=2e-4, batch_size=8,
                                                                       weight_decay=0.0))
    instruct: StageSettings = field(default_factory=lambda: StageSettings(steps=300, lr=5e-4, batch_size=8,
                                                                          weight_decay=0.0))
    # instruction batches drawn per set by these weights (1 for a set not named): the sets with many classes and
    # the digits, which the frozen LM cannot read even from exact word embeddings, get more of the budget
    instruct_weights: dict[str, float] = field(default_factory=lambda: {
        "digits": 2.0, "mnist": 2.0, "letters": 2.0, "colour-shapes": 2.0, "scenes-caption": 0.5})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    text_fraction: float = 0.15  # share of instruction batches that are text-only
    text_max_new_tokens: int = 16  # self-distilled answers and the build-time text check
    threads: int = 2
    eval_limit: int = 50  # test samples per set in the build-time check (rank mode)
    # the base SmolLM2's text accuracy is measured by the build unless given (it does not depend on the recipe:
    # greedy answers of the unchanged language model; measuring it costs ~10 min on a busy 2-core machine)
    base_text_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["spec"] = spec_dict(self.spec)
        return out


@dataclass
class SmolBuildReport:
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    vocabulary: dict[str, float] = field(default_factory=dict)  # stage 0: final losses, patch-to-words cosine
    parameters: dict[str, int] = field(default_factory=dict)
    rank_accuracy: dict[str, float] = field(default_factory=dict)  # embedded sets, rank mode
    eval_counts: dict[str, int] = field(default_factory=dict)
    text_accuracy: dict[str, float] = field(default_factory=dict)  # "base" (SmolLM2 alone) and "smol-llava"
    forward_seconds: dict[str, float] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None  # the whole recipe, start to end
    notes: list[str] = field(default_factory=list)  # circumstances of the run the figures depend on
