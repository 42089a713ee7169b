"""Training checkpoints: the method's weights, optimizer and scheduler state, every process's RNG state.

``<out>/checkpoints/epoch-<k>/`` (after each epoch) and ``step-<n>/`` (every ``save_every_steps``) hold

- the trained weights in the method's format: a peft adapter folder (lora), ``projector.safetensors``
  (projector), a Hugging Face model folder (full, partial);
- ``optimizer.safetensors`` + ``optimizer.json`` (its tensors, and its hyper-parameters and scalars),
  ``scheduler.json``;
- ``rng_state_<rank>.safetensors`` (torch CPU/CUDA generators) + ``rng_state_<rank>.json`` (python, numpy);
- ``trainer_state.json``, written last.

No pickle anywhere. A checkpoint is written into ``.tmp-<name>/`` and renamed into place once complete, so the
newest folder without the dot is always whole: that is where a rerun resumes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelLoadError, TrainingError
from ..models.loading import LoadedModel
from ..runs import atomic_write_json
from .methods.base import METHODS

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
TMP_PREFIX = ".tmp-"


@dataclass
class TrainerState:
    """Where training stood when a checkpoint was written."""

    method: str
    kind: Literal["epoch", "step"]
    global_step: int  # optimizer steps done
    epochs_done: int  # complete epochs
    step_in_epoch: int  # optimizer steps done in the epoch under way (0 at an epoch checkpoint)
    steps_per_epoch: int
    total_steps: int
    num_processes: int
    base_model: str
    loss: float | None = None
    epoch_end_done: bool = False  # on_epoch_end ran for this epoch checkpoint

    @property
    def name(self) -> str:
        return f"epoch-{self.epochs_done}" if self.kind == "epoch" else f"step-{self.global_step}"


@dataclass
class Checkpoint:
    path: Path
    state: TrainerState


# ------------------------------------------------------------------------------------------------ RNG state


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's generators: torch's as tensors, python's and numpy's as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = meta["numpy"]
    np.random.set_state((npy["kind"], np.array(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))


def _rng_files(folder: Path, rank: int) -> tuple[Path, Path]:
    return folder / f"rng_state_{rank}.safetensors", folder / f"rng_state_{rank}.json"


def save_rng(folder: Path, rank: int) -> None:
    tensors, meta = capture_rng()
    tensor_path, meta_path = _rng_files(folder, rank)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tensor_path))
    atomic_write_json(meta_path, meta)


def load_rng(folder: Path, rank: int) -> None:
    tensor_path, meta_path = _rng_files(folder, rank)
    if not tensor_path.is_file() or not meta_path.is_file():
        raise TrainingError(f"{folder} has no RNG state for process {rank}: it was written by a run with another "
                            "number of processes; resume with the same number, or start a new --out")
    restore_rng(load_file(str(tensor_path)), json.loads(meta_path.read_text()))


# --------------------------------------------------------------------------------------- optimizer, scheduler


def optimizer_files(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as safetensors tensors + a JSON document (tuples are remembered by key). The state
    may be keyed by parameter index (``optimizer.state_dict()``) or by parameter name (torch's distributed
    ``get_optimizer_state_dict``); the document says which."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    by_name = any(isinstance(k, str) for k in state_dict["state"])
    for idx, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = []
    for group in state_dict["param_groups"]:
        tuples = [k for k, v in group.items() if isinstance(v, tuple)]
        groups.append({**{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}, "__tuples__": tuples})
    return tensors, {"param_groups": groups, "scalars": scalars, "keys": "names" if by_name else "indices"}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    by_name = meta.get("keys") == "names"
    key_of = (lambda idx: idx) if by_name else int
    state: dict[Any, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name[len("state."):].rsplit(".", 1)  # a parameter name has dots, a state key none
        state.setdefault(key_of(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(key_of(idx), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        tuples = set(group.get("__tuples__", []))
        groups.append({k: tuple(v) if k in tuples else v for k, v in group.items() if k != "__tuples__"})
    return {"state": state, "param_groups": groups}


def is_sharded(model: Any) -> bool:
    """Whether FSDP (``FullyShardedDataParallel`` or ``fully_shard``) holds any of ``model``'s parameters."""
    try:
        # optional: here, not at the top, as a torch built without distributed support has no torch.distributed.fsdp
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


def gathered_states(wrapped: Any, optimizer: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The full model state dict (only when FSDP shards ``wrapped``; else None: the model is whole on every
    process) and the optimizer state dict keyed by parameter name, gathered on the main process's CPU.

    Under FSDP this is a collective: every process must call it (each holds a shard of the tensors); the main
    process receives the whole tensors, the others empty dicts. torch's ``get_*_state_dict`` API handles FSDP1,
    FSDP2, DDP and plain modules alike, so one checkpoint format serves them all (and a DDP checkpoint resumes
    under FSDP and back)."""
    # torch.distributed.checkpoint takes seconds to import: only when a checkpoint is written or resumed
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    model_state = get_model_state_dict(wrapped, options=options) if is_sharded(wrapped) else None
    return model_state, get_optimizer_state_dict(wrapped, optimizer, options=options)


def load_optimizer(wrapped: Any, optimizer: Any, folder: Path) -> None:
    """Put a checkpoint's optimizer state into ``optimizer`` (whatever shards it now: each process reads the full
    state and keeps its part)."""
    state = load_optimizer_state(folder)
    if not any(isinstance(p, str) for g in state["param_groups"] for p in g["params"]):
        if is_sharded(wrapped):
            raise TrainingError(f"{folder}: the optimizer state is keyed by parameter index (an older checkpoint); "
                                "FSDP needs names: resume it without FSDP, or start the run again")
        optimizer.load_state_dict(state)
        return
    # torch.distributed.checkpoint takes seconds to import: only when a checkpoint is resumed
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # not strict: a parameter that has had no gradient yet (the projector after text-only batches) has no state,
    # as in optimizer.load_state_dict
    inner = getattr(optimizer, "optimizer", optimizer)
    set_optimizer_state_dict(wrapped, inner, state, options=StateDictOptions(full_state_dict=True, strict=False))
    # torch's loader hands back tuples (AdamW's betas) as lists; keep the types a fresh optimizer has, so that
    # the next checkpoint's optimizer.json equals an uninterrupted run's
    for group, saved in zip(inner.param_groups, state["param_groups"]):
        for key, value in saved.items():
            if isinstance(value, tuple) and isinstance(group.get(key), list):
                group[key] = tuple(group[key])


# ----------------------------------------------------------------------------------------------- checkpoints


def checkpoints_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINTS


def save_checkpoint(accelerator: Any, root: Path, state: TrainerState, *, method: Any, model: Any, processor: Any,
                    optimizer: Any, scheduler: Any, wrapped: Any = None) -> Path:
    """Write one checkpoint from every process (each its RNG state, the main process the rest); returns its path.
    ``model`` is the unwrapped model, ``wrapped`` what ``accelerator.prepare`` returned (DDP / FSDP; default
    ``model``): under FSDP every process takes part in gathering the full weights and optimizer state."""
    final = root / state.name
    tmp = root / f"{TMP_PREFIX}{state.name}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_rng(tmp, accelerator.process_index)
    model_state, optimizer_state = gathered_states(model if wrapped is None else wrapped, optimizer)
    if accelerator.is_main_process:
        method.save(model, tmp, processor, state_dict=model_state)
        tensors, meta = optimizer_files(optimizer_state)
        save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
        atomic_write_json(tmp / OPTIMIZER_META, meta)
        atomic_write_json(tmp / SCHEDULER_FILE, scheduler.state_dict())
    del model_state, optimizer_state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, asdict(state))
        if final.exists():  # a checkpoint of the same name from an interrupted attempt at this very step
            shutil.rmtree(final)
        tmp.rename(final)
        log.info("checkpoint %s (step %d)", final, state.global_step)
    accelerator.wait_for_everyone()
    return final


def read_state(folder: Path) -> TrainerState:
    path = Path(folder) / STATE_FILE
    try:
        return TrainerState(**json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise TrainingError(f"{path}: unreadable trainer state ({exc}); delete the checkpoint folder") from exc


def list_checkpoints(out: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (by step; an epoch checkpoint after a step one of the same step)."""
    root = checkpoints_dir(out)
    if not root.is_dir():
        return []
    found = [Checkpoint(p, read_state(p)) for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda c: (c.state.global_step, c.state.kind == "epoch"))


def latest_checkpoint(out: str | Path) -> Checkpoint | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def remove_partial_checkpoints(out: str | Path) -> None:
    """Delete ``.tmp-*`` folders left by a run killed while writing a checkpoint."""
    root = checkpoints_dir(out)
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith(TMP_PREFIX):
                log.warning("removing the incomplete checkpoint %s", p)
                shutil.rmtree(p)


def mark_epoch_end_done(checkpoint: Checkpoint) -> None:
    checkpoint.state.epoch_end_done = True
    atomic_write_json(checkpoint.path / STATE_FILE, asdict(checkpoint.state))


def load_optimizer_state(folder: Path) -> dict[str, Any]:
    return optimizer_state_dict(load_file(str(folder / OPTIMIZER_TENSORS)),
                                json.loads((folder / OPTIMIZER_META).read_text()))


def load_scheduler_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / SCHEDULER_FILE).read_text())


# ------------------------------------------------------------------------------------------ using the weights


def load_finetuned(checkpoint: str | Path, *, base: str | None = None, **load_options: Any) -> LoadedModel:
    """A fine-tuned model from a checkpoint folder, ready to evaluate, opened by the method that saved it
    (:meth:`~unforget.training.methods.base.FinetuneMethod.open_checkpoint`): the base (``base``, else the one
    recorded in trainer_state.json) with the adapter applied / the projector replaced, or the saved model folder.
    ``load_options`` go to :func:`unforget.models.loading.load_model` (dtype, device, ...)."""
    folder = Path(checkpoint)
    if not (folder / STATE_FILE).is_file():
        raise ModelLoadError(f"{folder} is not an unforget training checkpoint (no {STATE_FILE})")
    state = read_state(folder)
    return METHODS.get(state.method).open_checkpoint(folder, base or state.base_model, **load_options)
