"""``lora``: peft LoRA on the language model's linear layers; the vision tower never gets adapters.

The default targets are the attention and MLP projections of a Llama-style language model (q, k, v, o, gate, up,
down). They are selected with a regular expression rooted at the language model, so the vision tower's layers of
the same name (CLIP's q_proj/k_proj/v_proj) stay untouched. ``freeze_multi_modal_projector: false`` trains the
projector fully as well (peft ``modules_to_save``). Preset ``llava15`` is LLaVA-1.5's LoRA recipe: r 128,
alpha 256, projector trained.

Checkpoints are standard peft adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``), loadable
with ``PeftModel.from_pretrained(base, folder)`` or ``unforget eval --adapter FOLDER``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ...errors import ConfigError, ModelLoadError
from ...flops import LORA_TARGETS
from ...models.loading import LoadedModel, load_model
from .base import (
    LANGUAGE_MODULES,
    METHODS,
    PROJECTOR_MODULES,
    FinetuneMethod,
    TrainedParts,
    check_parts,
    outermost_modules,
)

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_FILE = "adapter_model.safetensors"


@dataclass
class LoraOptions:
    """LoRA options, named as in peft's LoraConfig (alpha = lora_alpha, dropout = lora_dropout)."""

    preset: str | None = None  # llava15
    r: int = 8
    alpha: float | None = None  # None: 2 * r
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR))  # module names inside the LM
    freeze_multi_modal_projector: bool = True  # false: the projector trains fully beside the adapters
    use_rslora: bool = False
    use_dora: bool = False

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"method_options.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method_options.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("method_options.target_modules is empty: name at least one linear layer (q_proj)")


def language_model_regex(target_modules: list[str]) -> str:
    """A peft ``target_modules`` regex (matched with re.fullmatch) for ``target_modules`` inside the LM only."""
    lm = "|".join(re.escape(m) for m in LANGUAGE_MODULES if m != "lm_head")
    names = "|".join(re.escape(m) for m in target_modules)
    return rf"(?:.*\.)?(?:{lm})\.(?:.*\.)?(?:{names})"


def prepare(model: Any, options: LoraOptions) -> Any:
    # peft takes seconds to import: only when LoRA is used (this module is imported with every method)
    from peft import LoraConfig, get_peft_model

    check_parts(model)
    regex = language_model_regex(options.target_modules)
    if not any(re.fullmatch(regex, name) for name, _ in model.named_modules()):
        raise ConfigError(
            f"no module of the language model is named {', '.join(options.target_modules)}; "
            "set method_options.target_modules to names of its linear layers"
        )
    modules_to_save = None
    if not options.freeze_multi_modal_projector:
        projectors = outermost_modules(model, PROJECTOR_MODULES)
        if not projectors:
            raise ModelLoadError(f"{type(model).__name__} has no multimodal projector that unforget can find")
        modules_to_save = sorted({p.split(".")[-1] for p in projectors})
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha if options.alpha is not None else 2 * options.r,
        lora_dropout=options.dropout,
        target_modules=regex,
        modules_to_save=modules_to_save,
        bias="none",
        use_rslora=options.use_rslora,
        use_dora=options.use_dora,
    )
    return get_peft_model(model, config)


def save(model: Any, folder: Path, processor: Any = None, state_dict: dict[str, Any] | None = None) -> None:
    """The adapter (peft's folder); ``state_dict``: the whole model's, gathered from FSDP shards."""
    model.save_pretrained(str(folder), safe_serialization=True, state_dict=state_dict)


def load(model: Any, folder: Path) -> None:
    """Put an adapter saved by :func:`save` back into the peft model ``model`` (same options)."""
    from peft import set_peft_model_state_dict  # here for the import time, as in prepare

    path = Path(folder) / ADAPTER_FILE
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no {ADAPTER_FILE}: not a LoRA checkpoint")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k or "modules_to_save" in k]
    if unexpected or missing:
        raise ModelLoadError(
            f"{path} does not fit the adapters of this model (unexpected: {', '.join(unexpected[:3]) or 'none'}; "
            f"missing: {', '.join(missing[:3]) or 'none'}): resume with the same method options"
        )


def open_saved(folder: Path, base: str, **load_options: Any) -> LoadedModel:
    """A checkpoint is a peft adapter folder: the base with the adapter applied (kept unmerged)."""
    return load_model(base, adapter=str(folder), **load_options)


def trained_parts(options: LoraOptions) -> TrainedParts:
    """Adapters of rank ``r`` on the targeted projections (q k v o gate up down that ``target_modules`` names), and
    the projector when it trains beside them."""
    targets = tuple(t for t in LORA_TARGETS if f"{t}_proj" in options.target_modules)
    return TrainedParts(() if options.freeze_multi_modal_projector else ("projector",), lora_rank=options.r,
                        lora_targets=targets)


METHODS.register(FinetuneMethod(
    "lora", LoraOptions, prepare, save, load, default_lr=2e-4, trained_parts=trained_parts,
    open_saved=open_saved,
    presets={"llava15": {"r": 128, "alpha": 256, "freeze_multi_modal_projector": False}},
    description="peft LoRA on the language model's linear layers (preset llava15: r 128, alpha 256, projector)",
    low_rank=True,
))
