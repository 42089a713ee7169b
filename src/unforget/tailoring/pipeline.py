"""``tailor()``: open the checkpoints, calibrate if the method needs it, run the method, return a patch."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..errors import ConfigError, DataError
from .base import TAILORING_METHODS, StageSeconds, TailorJob, TensorStats, considered_keys
from .calibration import Batch, ModelLoader, calibrate
from .checkpoints import Checkpoint, fingerprint, open_checkpoint
from .hf_folder import write_hf_folder
from .patch import TailorPatch

log = logging.getLogger(__name__)

CheckpointSource = str | Path | Checkpoint


@dataclass
class TailorResult:
    """The patch, what it did to each considered tensor, and the time each stage took."""

    patch: TailorPatch
    stats: dict[str, TensorStats]
    seconds: StageSeconds
    config: Any
    base: Checkpoint = field(repr=False)

    @property
    def method(self) -> str:
        return self.patch.method

    @property
    def considered(self) -> int:
        """Entries in the considered tensors."""
        return sum(s.numel for s in self.stats.values())

    @property
    def changed_fraction(self) -> float:
        """Fraction of the considered entries the patch sets."""
        return self.patch.size / self.considered if self.considered else 0.0

    def tensor(self, key: str) -> torch.Tensor:
        """One tailored tensor (the base's where the patch does not touch it)."""
        return self.patch.patch_tensor(key, self.base.get(key))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The whole tailored model under the base checkpoint's names (one full copy in memory)."""
        return {key: self.tensor(key) for key in self.base.keys()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: method, options, changed fraction, seconds per stage, per-tensor statistics."""
        return {
            "method": self.method,
            "options": asdict(self.config),
            "considered": self.considered,
            "changed": self.patch.size,
            "changed_fraction": self.changed_fraction,
            "base_fingerprint": self.patch.base_fingerprint,
            "seconds": asdict(self.seconds),
            "tensors": {
                key: {**asdict(stat), "kept_fraction": stat.kept_fraction} for key, stat in self.stats.items()
            },
        }


def tailor(
    base: CheckpointSource,
    finetuned: CheckpointSource | Sequence[CheckpointSource],
    calib_batches: Iterable[Batch] | Sequence[Iterable[Batch]] | None = None,
    method: str = "model-tailor",
    *,
    sparsity: float | None = None,
    fusion: float | None = None,
    compensate: bool | None = None,
    modules: Sequence[str] | None = None,
    overlap: str | None = None,
    per_layer: bool | None = None,
    matrices_only: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    model_loader: ModelLoader | None = None,
    **method_options: Any,
) -> TailorResult:
    """Tailor the base model with one or more fine-tuned models.

    ``base``: a HF folder (safetensors). ``finetuned``: one or a list (one per task) of HF folders, peft
    LoRA adapter folders or partial safetensors files (e.g. projector only). ``calib_batches``: HF-style
    batches (``model(**batch).loss``) shared by all tasks, or one iterable of batches per task; needed by
    ``model-tailor`` unless ``fusion=1`` and ``compensate=False``.

    ``sparsity`` (default 0.1), ``fusion`` (0.8), ``compensate`` (True), ``overlap`` ("score") and
    ``per_layer`` (False) are the grafting options (``model-tailor``, ``magnitude``); other options go to
    the method by name (``alpha`` for ``average``, ``density`` for ``ties`` ...; see
    ``TAILORING_METHODS.get(name).config_class``). ``modules``: regular expressions selecting the considered
    tensors by name (default: the language model's blocks and the projector), 2-D only with
    ``matrices_only``. Nothing else changes.
    """
    spec = TAILORING_METHODS.get(method)
    options = {
        name: value
        for name, value in dict(
            sparsity=sparsity, fusion=fusion, compensate=compensate, overlap=overlap, per_layer=per_layer
        ).items()
        if value is not None
    }
    options.update(method_options)
    config = spec.make_config(options)
    seconds = StageSeconds()

    base_checkpoint = open_checkpoint(base, allow_pickle=allow_pickle)
    sources = [finetuned] if isinstance(finetuned, (str, Path, Checkpoint)) else list(finetuned)
    if not sources:
        raise ConfigError("tailor() needs at least one fine-tuned model")
    finetuned_checkpoints = [open_checkpoint(s, base=base_checkpoint, allow_pickle=allow_pickle) for s in sources]
    keys = considered_keys(base_checkpoint, modules, matrices_only=matrices_only)
    run_device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    calibration = None
    needs = spec.needs(config)
    if needs.any:
        batches = _batches_per_task(calib_batches, len(finetuned_checkpoints), method)
        with seconds.timing("calibrate"):
            calibration = calibrate(
                base_checkpoint, finetuned_checkpoints, batches, keys,
                fisher=needs.fisher, hessians=needs.hessians, first_order=needs.first_order,
                device=run_device, dtype=dtype, model_loader=model_loader,
            )
    job = TailorJob(base_checkpoint, finetuned_checkpoints, keys, calibration, run_device, seconds)
    output = spec.run(job, config)
    patch = TailorPatch(
        tensors=output.tensors,
        method=method,
        base_fingerprint=fingerprint(base_checkpoint),
        sparsity=getattr(config, "sparsity", None),
        options=asdict(config),
    )
    result = TailorResult(patch=patch, stats=output.stats, seconds=seconds, config=config, base=base_checkpoint)
    log.info("%s: %d of %d considered entries set (%.4f) in %d tensors", method, patch.size, result.considered,
             result.changed_fraction, len(patch.tensors))
    return result


def _batches_per_task(
    calib_batches: Iterable[Batch] | Sequence[Iterable[Batch]] | None, tasks: int, method: str
) -> list[list[Batch]]:
    if calib_batches is None:
        raise ConfigError(
            f"'{method}' with these options needs calibration batches (calib_batches=[{{input_ids, attention_mask, "
            "pixel_values, labels}}, ...]); without them use fusion=1.0 and compensate=False, or method='magnitude'"
        )
    if isinstance(calib_batches, Mapping):
        calib_batches = [calib_batches]
    items = list(calib_batches)
    if not items:
        raise DataError("the calibration set is empty: pass at least one batch")
    if isinstance(items[0], Mapping):
        return [items] * tasks  # one set shared by every task
    if len(items) != tasks:
        raise ConfigError(
            f"calib_batches has {len(items)} per-task sets for {tasks} fine-tuned models; pass one set per model "
            "or a single list of batches shared by all"
        )
    return [list(task_batches) for task_batches in items]


def write_tailored(
    result: TailorResult,
    out: str | Path,
    *,
    format: str = "hf",
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Write the tailored model as a HF folder (``format="hf"``: base configs, tokenizer and processor
    copied, safetensors shards) or as ``patch.safetensors`` (``format="patch"``; ``out`` is the file or a
    folder to put it in). Returns the written path."""
    with result.seconds.timing("write"):
        if format == "patch":
            path = Path(out)
            if path.suffix != ".safetensors":
                path = path / "patch.safetensors"
            return result.patch.save(path)
        if format == "hf":
            return write_hf_folder(
                result.base, out, transform=result.patch.patch_tensor, max_shard_size=max_shard_size,
                overwrite=overwrite,
            )
    raise ConfigError(f"unknown output format '{format}': 'hf' (a model folder) or 'patch' (patch.safetensors)")
