"""``full``: every weight trains except the vision tower (frozen by default, as in LLaVA and LLaMA-Factory).

Options are LLaMA-Factory's: ``freeze_vision_tower`` (default true), ``freeze_multi_modal_projector`` and
``freeze_language_model`` (default false). Checkpoints are Hugging Face model folders (safetensors + processor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import (
    METHODS,
    FinetuneMethod,
    TrainedParts,
    check_parts,
    load_model_folder,
    open_model_folder,
    part_of,
    require_trainable,
    save_model_folder,
    set_trainable,
)


@dataclass
class FullOptions:
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = False
    freeze_language_model: bool = False  # also freezes lm_head and parameters of no known part


def prepare(model: Any, options: FullOptions) -> Any:
    check_parts(model)
    frozen = {
        "vision": options.freeze_vision_tower,
        "projector": options.freeze_multi_modal_projector,
        "language": options.freeze_language_model,
        "other": options.freeze_language_model,
    }
    set_trainable(model, lambda name: not frozen[part_of(name)])
    require_trainable(model, "full")
    return model


def trained_parts(options: FullOptions) -> TrainedParts:
    """The language model, and the projector and the vision tower unless frozen. (FLOP counts take the language
    model as training even under ``freeze_language_model``: an upper bound.)"""
    parts = ["language"]
    if not options.freeze_multi_modal_projector:
        parts.append("projector")
    if not options.freeze_vision_tower:
        parts.append("vision")
    return TrainedParts(tuple(parts))


METHODS.register(FinetuneMethod(
    "full", FullOptions, prepare, save_model_folder, load_model_folder, default_lr=2e-5,
    trained_parts=trained_parts, open_saved=open_model_folder,
    description="all weights but the vision tower (freeze_* options as in LLaMA-Factory)",
))
