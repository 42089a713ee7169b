"""``projector``: only the multimodal projector trains (LLaVA's stage-1 recipe; LLaMA-Factory's train_mm_proj_only).

Checkpoints hold ``projector.safetensors``: the projector's tensors under the model's own parameter names
(``model.multi_modal_projector.linear_1.weight`` ...); the rest of the model is the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...errors import ModelLoadError
from .base import METHODS, FinetuneMethod, TrainedParts, check_parts, part_of, require_trainable, set_trainable

PROJECTOR_FILE = "projector.safetensors"


@dataclass
class ProjectorOptions:
    """No options: every parameter of the projector trains, nothing else."""


def prepare(model: Any, options: ProjectorOptions) -> Any:
    counts = check_parts(model)
    if counts["projector"] == 0:
        raise ModelLoadError(f"{type(model).__name__} has no multimodal projector that unforget can find")
    set_trainable(model, lambda name: part_of(name) == "projector")
    require_trainable(model, "projector")
    return model


def projector_state(model: Any, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """The projector's tensors, from the model or from a full ``state_dict`` of it (gathered from FSDP shards)."""
    if state_dict is None:
        return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if part_of(n) == "projector"}
    return {n: state_dict[n].contiguous() for n, _ in model.named_parameters() if part_of(n) == "projector"}


def save(model: Any, folder: Path, processor: Any = None, state_dict: dict[str, Any] | None = None) -> None:
    save_file(projector_state(model, state_dict), str(folder / PROJECTOR_FILE), metadata={"format": "pt", "method": "projector"})


def load(model: Any, folder: Path) -> None:
    """Put the projector weights of ``folder`` (or of a ``projector.safetensors`` file) into ``model``."""
    path = Path(folder)
    path = path / PROJECTOR_FILE if path.is_dir() else path
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist: not a projector checkpoint")
    saved = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if part_of(n) == "projector"}
    missing = sorted(set(params) - set(saved))
    unknown = sorted(set(saved) - set(params))
    if missing or unknown:
        raise ModelLoadError(
            f"{path} does not fit this model's projector (missing: {', '.join(missing[:3]) or 'none'}; "
            f"not in the model: {', '.join(unknown[:3]) or 'none'}); it was trained on another architecture"
        )
    with torch.no_grad():
        for name, p in params.items():
            if saved[name].shape != p.shape:
                raise ModelLoadError(f"{path}: '{name}' has shape {tuple(saved[name].shape)}, the model "
                                     f"{tuple(p.shape)}: the checkpoint belongs to another base model; pass the "
                                     "base it was trained on")
            p.copy_(saved[name])


def trained_parts(options: ProjectorOptions) -> TrainedParts:
    return TrainedParts(("projector",))


# a checkpoint holds only the projector: it is opened as the base with ``load`` applied (open_saved None)
METHODS.register(FinetuneMethod(
    "projector", ProjectorOptions, prepare, save, load, default_lr=1e-3, trained_parts=trained_parts,
    description="only the multimodal projector trains (LLaVA stage 1)",
    projector_only=True,
))
