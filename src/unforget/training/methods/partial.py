"""``partial``: the top-k decoder blocks of the language model train (LLaMA-Factory's ``freeze`` method).

``trainable_layers`` k > 0 trains the last k blocks, k < 0 the first -k. ``trainable_modules`` narrows each
block to sub-modules by name (``mlp``, ``self_attn``, ``q_proj``; ``all`` = the whole block).
``extra_modules`` names more modules to train anywhere in the language model (``lm_head``, ``embed_tokens``,
``norm``): a parameter matches when one component of its dotted name equals the entry, so ``norm`` is the final
norm and not ``input_layernorm``. Checkpoints are Hugging Face model folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
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

# in-memory (model.language_model.layers.3) and saved (language_model.model.layers.3) naming
_BLOCK = re.compile(r"(?:^|\.)(?:language_model|text_model)\.(?:model\.)?layers\.(\d+)\.(.+)$")


@dataclass
class PartialOptions:
    trainable_layers: int = 2
    trainable_modules: list[str] = field(default_factory=lambda: ["all"])
    extra_modules: list[str] = field(default_factory=list)
    freeze_multi_modal_projector: bool = True

    def validate(self) -> None:
        if not self.trainable_modules:
            raise ConfigError("method_options.trainable_modules is empty: use [all] or sub-module names (mlp)")


def decoder_blocks(model: Any) -> int:
    """How many decoder blocks the language model has (from its parameter names)."""
    indices = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _BLOCK.search(n))}
    return max(indices) + 1 if indices else 0


def trainable_predicate(model: Any, options: PartialOptions) -> Any:
    n_blocks = decoder_blocks(model)
    k = options.trainable_layers
    if abs(k) > n_blocks:
        raise ConfigError(f"method_options.trainable_layers={k} but the language model has {n_blocks} blocks")
    blocks = set(range(n_blocks - k, n_blocks)) if k >= 0 else set(range(0, -k))
    all_modules = "all" in options.trainable_modules

    def trainable(name: str) -> bool:
        part = part_of(name)
        if part == "projector":
            return not options.freeze_multi_modal_projector
        if part == "vision":
            return False
        segments = name.split(".")
        if any(e in segments for e in options.extra_modules):
            return True
        m = _BLOCK.search(name)
        if m is None or int(m.group(1)) not in blocks:
            return False
        return all_modules or any(e in m.group(2).split(".") for e in options.trainable_modules)

    return trainable


def prepare(model: Any, options: PartialOptions) -> Any:
    check_parts(model)
    set_trainable(model, trainable_predicate(model, options))
    require_trainable(model, "partial")
    return model


def trained_parts(options: PartialOptions) -> TrainedParts:
    """The language model (an upper bound: only some of its blocks train), and the projector unless frozen."""
    return TrainedParts(("language",) if options.freeze_multi_modal_projector else ("language", "projector"))


METHODS.register(FinetuneMethod(
    "partial", PartialOptions, prepare, save_model_folder, load_model_folder, default_lr=2e-5,
    trained_parts=trained_parts, open_saved=open_model_folder,
    description="the top-k language-model blocks (and named extra modules) train",
))
