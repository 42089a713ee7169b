"""What every fine-tuning method shares: the registry, the model's parts, freezing and counting helpers.

A method is one module (as a peft tuner is one folder): an options dataclass, ``prepare(model, options) -> model``
that sets ``requires_grad`` or wraps the model, how its trained weights are saved into / restored from a
checkpoint folder, how such a folder becomes a model to evaluate, and which parts of the model it trains (for the
plans' FLOP figures). Callers ask the method object; none branches on a method's name. It registers a
:class:`FinetuneMethod` in :data:`METHODS`, which finds the module itself: adding a method is one new file in this
package.

The parts of a multimodal model are told apart by module names, which differ between families:

=========== ========================================= ==============================================
part        LLaVA / LLaVA-NeXT / OneVision            others
=========== ========================================= ==============================================
vision      ``model.vision_tower``                    ``visual`` (Qwen2-VL), ``vision_model`` (Idefics3, BLIP)
projector   ``model.multi_modal_projector``           ``visual.merger``, ``connector``, ``qformer`` + ``query_tokens``
                                                      + ``language_projection`` (InstructBLIP)
language    ``model.language_model`` and ``lm_head``  ``text_model`` (Idefics3)
=========== ========================================= ==============================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from ...config import from_dict
from ...errors import ConfigError, ModelLoadError
from ...flops import LORA_TARGETS
from ...models.loading import LoadedModel, load_model
from ...registry import Registry, did_you_mean

log = logging.getLogger(__name__)

Part = Literal["vision", "projector", "language", "other"]

# Checked in this order, so that a projector nested in the vision module (Qwen2-VL's visual.merger) is a projector.
PROJECTOR_MODULES = ("multi_modal_projector", "connector", "merger", "qformer", "query_tokens",
                     "language_projection", "image_newline")
VISION_MODULES = ("vision_tower", "visual", "vision_model")
LANGUAGE_MODULES = ("language_model", "text_model", "lm_head")


@dataclass(frozen=True)
class TrainedParts:
    """What a method trains, in the terms of :func:`unforget.flops.train_step_flops`: the parts whose weights train
    (vision, projector, language), and LoRA adapters of rank ``lora_rank`` (0: none) on the language model's
    ``lora_targets`` (of ``LORA_TARGETS``)."""

    parts: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def flops_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`unforget.flops.train_step_flops` that say what trains."""
        return {"trainable": list(self.parts), "lora_rank": self.lora_rank, "lora_targets": list(self.lora_targets)}


@dataclass(frozen=True)
class FinetuneMethod:
    """A registered method. ``save`` writes the trained weights into a checkpoint folder; ``load`` puts them
    back into a model that ``prepare`` made from the same base (used to resume); ``open_saved`` makes a model to
    evaluate from such a folder (:meth:`open_checkpoint`); ``trained_parts`` says what the options train."""

    name: str
    options_class: type
    prepare: Callable[[Any, Any], Any]
    save: Callable[..., None]  # (model, folder, processor, state_dict=None); state_dict: gathered under FSDP
    load: Callable[[Any, Path], None]  # (prepared model, folder)
    default_lr: float
    trained_parts: Callable[[Any], TrainedParts]  # (parsed options) -> what trains
    # (checkpoint folder, base model, load_model options) -> the fine-tuned model; None: the base with ``load``
    # applied (a method that saves only some of the weights)
    open_saved: Callable[..., LoadedModel] | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""  # what `unforget ls methods` says about it
    # the two sides of EMT's third finding: the projector alone trains, whatever the options (projector_only),
    # or low-rank adapters on the language model instead of its weights (low_rank)
    projector_only: bool = False
    low_rank: bool = False

    def open_checkpoint(self, folder: Path, base: str, **load_options: Any) -> LoadedModel:
        """The model a checkpoint folder of this method holds, trained from ``base``, ready to evaluate.
        ``load_options`` go to :func:`unforget.models.loading.load_model` (dtype, device, ...)."""
        if self.open_saved is not None:
            return self.open_saved(Path(folder), base, **load_options)
        lm = load_model(base, **load_options)
        self.load(lm.model, Path(folder))
        return lm

    def parse_options(self, options: dict[str, Any] | None) -> Any:
        """The options dataclass from a mapping; a ``preset`` supplies defaults that explicit options override."""
        options = dict(options or {})
        preset = options.get("preset")
        if preset is not None:
            if preset not in self.presets:
                raise ConfigError(
                    f"method '{self.name}' has no preset '{preset}'.{did_you_mean(str(preset), list(self.presets))} "
                    f"Presets: {', '.join(self.presets) or '(none)'}"
                )
            options = {**self.presets[preset], **options}
        return from_dict(self.options_class, options, where=f"method_options ({self.name})")


# a method is one module of this package that registers itself: the first lookup imports them all
METHODS: Registry[FinetuneMethod] = Registry("fine-tuning method", package="unforget.training.methods")


def part_of(param_name: str) -> Part:
    """Which part of a multimodal model a parameter (or module) name belongs to; works on peft-wrapped names."""
    segments = param_name.split(".")
    if any(s in PROJECTOR_MODULES for s in segments):
        return "projector"
    if any(s in VISION_MODULES for s in segments):
        return "vision"
    if any(s in LANGUAGE_MODULES for s in segments):
        return "language"
    return "other"


def check_parts(model: Any) -> dict[Part, int]:
    """Parameter counts per part; a model whose vision tower or language model cannot be found is refused."""
    counts: dict[Part, int] = {"vision": 0, "projector": 0, "language": 0, "other": 0}
    for name, p in model.named_parameters():
        counts[part_of(name)] += p.numel()
    missing = [p for p in ("vision", "language") if counts[p] == 0]
    if missing:
        raise ModelLoadError(
            f"cannot find the {' and the '.join(missing)} in {type(model).__name__}: unforget knows the module "
            f"names {', '.join(VISION_MODULES)} (vision), {', '.join(PROJECTOR_MODULES)} (projector) and "
            f"{', '.join(LANGUAGE_MODULES)} (language model)"
        )
    if counts["other"]:
        log.info("%d parameters belong to no known part; they are trained with the language model", counts["other"])
    return counts


def set_trainable(model: Any, trainable: Callable[[str], bool]) -> None:
    """``requires_grad`` of every parameter from its name."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(trainable(name)))


def trainable_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def require_trainable(model: Any, method: str) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"method '{method}' with these options trains no parameter; unfreeze at least one part")


def outermost_modules(model: Any, names: tuple[str, ...]) -> list[str]:
    """Full names of the modules whose own name is in ``names`` and that sit inside no other such module."""
    found: list[str] = []
    for full, _ in model.named_modules():
        if full and full.split(".")[-1] in names and not any(full.startswith(f + ".") for f in found):
            found.append(full)
    return found


# ------------------------------------------------------------------------------------------------------------
# Whole-model checkpoints (full and partial fine-tuning)


def open_model_folder(folder: Path, base: str, **load_options: Any) -> LoadedModel:
    """A checkpoint saved by :func:`save_model_folder` is a whole model: loaded from the folder itself."""
    return load_model(str(folder), **load_options)


def save_model_folder(model: Any, folder: Path, processor: Any, state_dict: dict[str, Any] | None = None) -> None:
    """A Hugging Face model folder (safetensors): loadable by ``unforget eval --model FOLDER``. ``state_dict``: the
    whole model's, gathered from FSDP shards (else the model's own tensors)."""
    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    if processor is not None:
        processor.save_pretrained(folder)


def load_model_folder(model: Any, folder: Path) -> None:
    """Copy the weights of the model folder ``folder`` into ``model`` (same architecture), through
    ``from_pretrained`` so that the checkpoint's key naming is converted the way transformers does it."""
    dtype = next(model.parameters()).dtype
    try:
        saved = type(model).from_pretrained(folder, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: cannot read the checkpoint's model: {exc}") from exc
    saved_params = dict(saved.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in saved_params:
                raise ModelLoadError(f"{folder}: the checkpoint has no tensor '{name}'; it was saved from another "
                                     "model")
            p.copy_(saved_params[name])
    del saved
