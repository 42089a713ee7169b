"""A tailoring run from a config to an output folder (what ``unforget tailor`` does).

Inputs are resolved as a user names them: the base as a zoo name or HF folder; each fine-tuned model as a HF
folder, a peft adapter folder, a partial safetensors checkpoint, an ``unforget finetune`` checkpoint folder
(``<run>/checkpoints/epoch-3``) or a whole ``unforget finetune`` run folder (its newest checkpoint). The out
folder gets the tailored model (a HF folder, or ``patch.safetensors``), ``config.yaml`` (resolved) and
``metrics.json`` (``TailorResult.summary()`` plus the inputs).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from ..config import dump_yaml, read_yaml
from ..data.sampling import SamplingStrategy
from ..errors import ConfigError, ModelLoadError
from ..identity import run_identity
from ..models.loading import resolve_dtype, resolve_model_path
from ..runs import RunDir, check_resumable, new_manifest, write_manifest
from ..training.checkpoints import STATE_FILE, latest_checkpoint, read_state
from .base import TAILORING_METHODS
from .calibration import load_model_for_calibration
from .calibration_set import calibration_batches, processor_model
from .pipeline import tailor, write_tailored
from ..runs.layout import CONFIG, METRICS

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
GRAFTING_OPTIONS = ("sparsity", "fusion", "compensate", "overlap", "per_layer")


@dataclass
class CalibrationData:
    """Where calibration batches come from. ``datasets``: one shared by every fine-tuned model, or one per
    model (``a+b``: both sets for one model); empty: each model's own fine-tuning data (read from its
    ``unforget finetune`` run)."""

    datasets: list[str] = field(default_factory=list)
    split: str = "train"
    limit: int = 64  # samples per dataset, drawn as `sampling` says
    sampling: SamplingStrategy = "stratified"  # seeded class-stratified; head: the first N
    batch_size: int = 4
    template: int | str = 0

    def validate(self) -> None:
        if self.limit < 1 or self.batch_size < 1:
            raise ConfigError(f"calib.limit and calib.batch_size must be >= 1, got {self.limit} and {self.batch_size}")


@dataclass
class TailorConfig:
    """``unforget tailor``: graft (or merge) fine-tuned models onto their base."""

    base: str | None = None  # zoo name or HF folder; None: the base recorded in a training checkpoint
    finetuned: list[str] = field(default_factory=list)
    method: str = "model-tailor"  # `unforget ls tailoring`
    sparsity: float | None = None  # grafting methods (model-tailor, magnitude); None: the method's default
    options: dict[str, Any] = field(default_factory=dict)  # other method options: fusion, density, alpha ...
    modules: list[str] | None = None  # tensor-name patterns; None: language-model blocks and projector
    calib: CalibrationData = field(default_factory=CalibrationData)
    format: Literal["hf", "patch"] = "hf"
    device: str = "auto"  # where calibration and compensation run
    dtype: str = "auto"  # calibration model dtype (auto: the checkpoint's)
    max_shard_size: str = "5GB"
    allow_pickle: bool = False
    overwrite: bool = False
    out: str | None = None  # default runs/tailor/<base>-<method>-<time>

    def validate(self) -> None:
        if not self.finetuned:
            raise ConfigError("tailor needs at least one fine-tuned model (--finetuned DIR[,DIR2...])")
        if self.sparsity is not None and not 0.0 <= self.sparsity <= 1.0:
            raise ConfigError(f"sparsity is a fraction of the considered weights: 0..1, got {self.sparsity}")


@dataclass
class TailorRun:
    """What a run wrote: the out folder, the model (HF folder or patch file) and the summary."""

    out: Path
    model: Path
    summary: dict[str, Any]


# ------------------------------------------------------------------------------------------------- inputs


def resolve_finetuned(source: str | Path) -> Path:
    """A fine-tuned model's weights: ``source`` itself, or the newest checkpoint of an ``unforget finetune``
    run folder."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"fine-tuned model {path} does not exist")
    if path.is_dir() and (path / "checkpoints").is_dir() and not (path / STATE_FILE).is_file():
        newest = latest_checkpoint(path)
        if newest is None:
            raise ModelLoadError(f"{path} is an unforget finetune run without a complete checkpoint yet")
        log.info("%s: using its newest checkpoint %s", path, newest.path.name)
        return newest.path
    return path


def training_base(checkpoint: Path) -> str | None:
    """The base model an ``unforget finetune`` checkpoint was trained from (None for other folders)."""
    return read_state(checkpoint).base_model if (checkpoint / STATE_FILE).is_file() else None


def training_datasets(checkpoint: Path) -> list[str]:
    """The datasets an ``unforget finetune`` checkpoint was trained on (from its run's config.yaml)."""
    config = checkpoint.parent.parent / CONFIG
    if checkpoint.parent.name != "checkpoints" or not config.is_file():
        return []
    return list(((read_yaml(config).get("data") or {}).get("datasets")) or [])


def resolve_base(cfg: TailorConfig, finetuned: list[Path]) -> Path:
    name = cfg.base
    if name is None:
        bases = {training_base(p) for p in finetuned}
        if None in bases or len(bases) != 1:
            raise ConfigError("--base is needed: the fine-tuned models are not unforget training checkpoints of one "
                              "base model")
        name = bases.pop()
    path = Path(resolve_model_path(str(name)))
    if not path.is_dir():
        raise ModelLoadError(f"base model {name}: tailoring reads weights from a local folder; download the model "
                             "and pass its folder")
    return path


def method_options(cfg: TailorConfig) -> dict[str, Any]:
    """The options ``tailor()`` gets: ``sparsity`` for grafting methods, ``options`` as given; a sparsity for a
    method without one is an error that says what the method takes instead."""
    spec = TAILORING_METHODS.get(cfg.method)
    known = {f.name for f in dataclasses.fields(spec.config_class)}
    options = dict(cfg.options)
    if cfg.sparsity is not None:
        if "sparsity" not in known:
            raise ConfigError(f"tailoring method '{cfg.method}' has no sparsity (it merges whole task vectors); its "
                              f"options: {', '.join(sorted(known))}. Leave --sparsity out or pick model-tailor / "
                              "magnitude")
        options["sparsity"] = cfg.sparsity
    spec.make_config(options)  # unknown or invalid options fail here, before any work
    return options


def needs_calibration(method: str, options: dict[str, Any]) -> bool:
    spec = TAILORING_METHODS.get(method)
    return spec.needs(spec.make_config(options)).any


def calibration_sets(cfg: TailorConfig, finetuned: list[Path], base: Path,
                     progress: ProgressFn | None = None) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """The calibration datasets of each fine-tuned model and their batches (a shared set is built once)."""
    names = list(cfg.calib.datasets)
    if not names:
        found = [training_datasets(p) for p in finetuned]
        if not all(found):
            raise ConfigError(f"'{cfg.method}' needs calibration data: pass --calib DATASET (e.g. the fine-tuning "
                              "set), one shared or one per fine-tuned model")
        names = ["+".join(f) for f in found]
    if len(names) not in (1, len(finetuned)):
        raise ConfigError(f"--calib names {len(names)} datasets for {len(finetuned)} fine-tuned models: give one "
                          "shared set or one per model")
    lm = processor_model(base)
    built: dict[str, list[dict[str, Any]]] = {}
    for name in dict.fromkeys(names):
        batches: list[dict[str, Any]] = []
        for ref in name.split("+"):  # "a+b": a model fine-tuned on several sets calibrates on all of them
            batches += calibration_batches(lm, ref, split=cfg.calib.split, limit=cfg.calib.limit,
                                           batch_size=cfg.calib.batch_size, template=cfg.calib.template,
                                           sampling=cfg.calib.sampling, progress=progress)
        built[name] = batches
    per_model = names * len(finetuned) if len(names) == 1 else names
    return per_model, [built[n] for n in per_model]


def counting_loader(progress: ProgressFn | None, total: int, dtype: str) -> Callable[[Path | None], Any] | None:
    """A calibration model loader that reports each forward pass (Fisher and Hessian passes) to ``progress``."""
    if progress is None:
        return None
    def load(folder: Path | None) -> Any:
        model = load_model_for_calibration(folder, dtype=None if dtype == "auto" else resolve_dtype(dtype, "cpu"))
        done = [0]

        def count(module: Any, args: Any, kwargs: Any) -> None:
            done[0] += 1
            progress("calibration passes", done[0], total)

        model.register_forward_pre_hook(count, with_kwargs=True)
        return model

    return load


# ---------------------------------------------------------------------------------------------------- run


def default_out(cfg: TailorConfig, base: Path) -> Path:
    return Path("runs") / "tailor" / f"{base.name}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def previous_attempt(out: Path, resolved: TailorConfig) -> Literal["done", "interrupted"] | None:
    """What ``out`` holds of an earlier run of the same config: "done" (metrics.json is written last), "interrupted"
    (its config.yaml, written before the weights, without metrics.json: the weights may be partial and are
    replaced), or None (nothing of this config: weights there are refused unless ``overwrite``)."""
    config = out / CONFIG
    if not config.is_file() or config.read_text() != dump_yaml(resolved):
        return None
    return "done" if (out / METRICS).is_file() else "interrupted"


def run_tailor(cfg: TailorConfig, progress: ProgressFn | None = None) -> TailorRun:
    """Tailor, write the model, ``config.yaml`` and ``metrics.json`` into ``cfg.out``."""
    cfg.validate()
    finetuned = [resolve_finetuned(f) for f in cfg.finetuned]
    base = resolve_base(cfg, finetuned)
    options = method_options(cfg)
    out = Path(cfg.out) if cfg.out else default_out(cfg, base)
    resolved = dataclasses.replace(cfg, base=str(base), finetuned=[str(p) for p in finetuned], out=str(out))
    attempt = previous_attempt(out, resolved)

    identity = run_identity(resolved)
    if not cfg.overwrite:  # a folder holding another run is refused before any work
        check_resumable(out, "tailor", identity)
    if attempt == "done":
        log.info("%s: this tailoring run is already done (metrics.json); nothing to redo", out)
        summary = RunDir(out).read_metrics()
        return TailorRun(out=out, model=Path(summary["model"]), summary=summary)
    batches = None
    loader = None
    calibration: list[str] = []
    if needs_calibration(cfg.method, options):
        calibration, batches = calibration_sets(cfg, finetuned, base, progress)
        passes = sum(len(b) for b in batches) * 2  # a Fisher pass and a Hessian pass per task
        loader = counting_loader(progress, passes, cfg.dtype)
    device = None if cfg.device == "auto" else cfg.device
    dtype = None if cfg.dtype == "auto" else resolve_dtype(cfg.dtype, device or "cpu")
    stage = (lambda done: progress(f"tailor ({cfg.method})", done, 2)) if progress else (lambda done: None)
    stage(0)
    result = tailor(base, finetuned, batches, cfg.method, modules=cfg.modules, device=device, dtype=dtype,
                    allow_pickle=cfg.allow_pickle, model_loader=loader, **options)
    stage(1)
    run = RunDir(out)
    write_manifest(run.path, new_manifest("tailor", identity))
    run.write_config(resolved)  # before the weights: a rerun recognises an interrupted attempt of the same command
    written = write_tailored(result, out if cfg.format == "hf" else out / "patch.safetensors", format=cfg.format,
                             max_shard_size=cfg.max_shard_size, overwrite=cfg.overwrite or attempt == "interrupted")
    stage(2)
    summary = {"base": str(base), "finetuned": [str(p) for p in finetuned], "calibration": calibration,
               "format": cfg.format, "model": str(written), **result.summary()}
    run.write_metrics(summary)  # written last: it marks the run done
    log.info("%s: %d of %d considered entries changed (%.4f) -> %s", cfg.method, result.patch.size,
             result.considered, result.changed_fraction, written)
    return TailorRun(out=out, model=written, summary=summary)
