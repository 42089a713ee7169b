"""The Model Tailor study (arXiv 2402.12048): graft a sparse part of the fine-tuning onto the base model and
measure what the original tasks keep and what the target task reaches, against the weight-merging baselines.

Run folder (``runs/tailor/<name>/``)::

    config.yaml                      the resolved study config
    finetune/<target>/               per target task: train/ (the ``unforget finetune`` run, unless a checkpoint
                                     was given), samples.jsonl + metrics.json (the fine-tuned model), DONE
    base/                            the base model on the original and every target task, DONE
    <group>/<method>[-<pct>pct]/     per group (each target alone, and ``multi``: every target grafted at once)
                                     and tailoring run: spec.json, tailor.json (TailorResult.summary()),
                                     patch.safetensors, samples.jsonl, metrics.json, DONE
    metrics.json, report.html, report.md, plots/   the summary, built from the folders above only

One model is held in memory for all evaluations: a fine-tuned model or a patch is written into its weights,
evaluated, and the base weights are read back from the base checkpoint. Every step resumes: a sub-run with DONE
is skipped, a written patch is not recomputed, an interrupted evaluation continues from its last sample.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..data.sampling import SamplingStrategy
from ..errors import ConfigError
from ..evaluation.config import EvalConfig
from ..models.config import ModelConfig
from ..checks import open_checked_run
from ..runs import RunDir, atomic_write_json, read_json, sub_run
from ..training.config import MethodTrainSettings
from .base import STUDIES, Study

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
MULTI = "multi"
RESERVED = {MULTI, "base", "finetune", "plots"}


@dataclass
class TargetTask:
    """A task the base model is fine-tuned on. ``checkpoint``: a fine-tuned model to use instead of fine-tuning
    (HF folder, peft adapter, projector checkpoint, ``unforget finetune`` checkpoint or run folder)."""

    name: str
    dataset: str
    checkpoint: str | None = None


@dataclass
class TailorTrain(MethodTrainSettings):
    """How each target without a ``checkpoint`` is fine-tuned (``limit``: training samples per target)."""

    seed: int = 0


@dataclass
class TailoringArm:
    """One tailoring method. ``sweep``: run it at every study sparsity (None: when the method has a sparsity,
    i.e. model-tailor and magnitude); merging methods run once at their ``options``."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    sweep: bool | None = None


@dataclass
class StudyCalibration:
    split: str = "train"  # calibration samples: ``limit`` of each target's split, drawn as ``sampling`` says
    limit: int = 64
    sampling: SamplingStrategy = "stratified"
    batch_size: int = 4
    template: int | str = 0


@dataclass
class HeadlineCheck:
    """The paper's claim: at sparsity <= ``sparsity`` Model Tailor keeps >= ``keep`` of the base model on the
    original tasks and reaches >= ``reach`` of the fine-tuned model on the target task."""

    sparsity: float = 0.1
    keep: float = 0.99
    reach: float = 0.97


def _default_arms() -> list[TailoringArm]:
    return [TailoringArm("model-tailor", "model-tailor"), TailoringArm("magnitude", "magnitude"),
            TailoringArm("average", "average"), TailoringArm("task-arithmetic", "task-arithmetic"),
            TailoringArm("ties", "ties"), TailoringArm("dare", "dare")]


@dataclass
class TailorStudyConfig:
    name: str = "tailor"
    model: ModelConfig = field(default_factory=ModelConfig)
    original: list[str] = field(default_factory=lambda: ["shapes", "digits"])  # tasks the base model should keep
    targets: list[TargetTask] = field(default_factory=lambda: [TargetTask("vqa", "scenes-vqa")])
    train: TailorTrain = field(default_factory=TailorTrain)
    sparsities: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2])
    methods: list[TailoringArm] = field(default_factory=_default_arms)
    single_task: bool = True  # tailor each target on its own
    multi_task: bool = True  # and all targets onto one base (with two or more targets)
    modules: list[str] | None = None  # tensor-name patterns; None: language-model blocks and projector
    calib: StudyCalibration = field(default_factory=StudyCalibration)
    device: str = "auto"  # where calibration and compensation run
    eval: EvalConfig = field(default_factory=EvalConfig)  # datasets are set per run (original + targets)
    save_patches: bool = True  # keep patch.safetensors per sub-run (a merge's patch is dense: a model's size)
    headline: HeadlineCheck = field(default_factory=HeadlineCheck)
    alpha: float = 0.05  # intervals at 1 - alpha
    out: str | None = None  # default runs/tailor/<name>

    def validate(self) -> None:
        if not self.targets:
            raise ConfigError("a tailor study needs at least one target under `targets:`")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names) or RESERVED & set(names):
            raise ConfigError(f"target names must be unique and not {sorted(RESERVED)}, got {names}")
        if not self.original:
            raise ConfigError("list the original tasks the base model should keep under `original:`")
        if not self.methods:
            raise ConfigError("a tailor study needs at least one method under `methods:`")
        arms = [m.name for m in self.methods]
        if len(set(arms)) != len(arms):
            raise ConfigError(f"method names must be unique, got {arms}")
        if any(not 0.0 < s <= 1.0 for s in self.sparsities):
            raise ConfigError(f"sparsities are fractions in (0, 1], got {self.sparsities}")
        if not (self.single_task or (self.multi_task and len(self.targets) > 1)):
            raise ConfigError("nothing to tailor: set single_task: true, or multi_task: true with two or more targets")
        from ..tailoring import TAILORING_METHODS

        for arm in self.methods:
            TAILORING_METHODS.get(arm.method)


# ------------------------------------------------------------------------------------------------- the plan


@dataclass
class SubRun:
    """One tailoring run: a group of targets, a method and (for grafting methods) a sparsity."""

    group: str
    targets: list[str]
    arm: TailoringArm
    sparsity: float | None

    @property
    def folder_name(self) -> str:
        return self.arm.name if self.sparsity is None else f"{self.arm.name}-{percent_label(self.sparsity)}pct"

    def options(self) -> dict[str, Any]:
        options = dict(self.arm.options)
        if self.sparsity is not None:
            options["sparsity"] = self.sparsity
        return options

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "targets": self.targets, "name": self.arm.name, "method": self.arm.method,
                "sparsity": self.sparsity, "options": self.options()}


def percent_label(fraction: float) -> str:
    """0.1 -> "10", 0.005 -> "0.5"."""
    return f"{fraction * 100:.6g}"


def sweeps(arm: TailoringArm) -> bool:
    if arm.sweep is not None:
        return arm.sweep
    from ..tailoring import TAILORING_METHODS

    return "sparsity" in {f.name for f in dataclasses.fields(TAILORING_METHODS.get(arm.method).config_class)}


def groups(cfg: TailorStudyConfig) -> dict[str, list[str]]:
    """Group name -> the targets grafted together."""
    out = {t.name: [t.name] for t in cfg.targets} if cfg.single_task else {}
    if cfg.multi_task and len(cfg.targets) > 1:
        out[MULTI] = [t.name for t in cfg.targets]
    return out


def plan(cfg: TailorStudyConfig) -> list[SubRun]:
    runs = []
    for group, targets in groups(cfg).items():
        for arm in cfg.methods:
            if sweeps(arm):
                runs += [SubRun(group, targets, arm, s) for s in cfg.sparsities]
            else:
                runs.append(SubRun(group, targets, arm, None))
    return runs


def eval_config(cfg: TailorStudyConfig, datasets: list[str]) -> EvalConfig:
    return replace(cfg.eval, model=cfg.model, datasets=list(dict.fromkeys(datasets)))


# ------------------------------------------------------------------------------------------------- running


class BaseWeights:
    """The study's one in-memory model and the base checkpoint its weights are restored from."""

    def __init__(self, cfg: TailorStudyConfig):
        from ..models.loading import load_configured_model
        from ..tailoring import open_checkpoint

        self.lm = load_configured_model(cfg.model)
        self.folder = Path(self.lm.source)
        self.checkpoint = open_checkpoint(self.folder)

    def load(self, checkpoint: Any, keys: list[str]) -> None:
        from ..tailoring.calibration import load_weights_into

        load_weights_into(self.lm.model, checkpoint, keys)

    def restore(self, keys: list[str]) -> None:
        """Put the base values of ``keys`` back (after a fine-tuned model, a patch, or calibration)."""
        self.load(self.checkpoint, keys)


def run_tailor_study(cfg: TailorStudyConfig, progress: ProgressFn | None = None) -> Path:
    out = Path(cfg.out or Path("runs") / "tailor" / cfg.name)
    root = open_checked_run(out, "tailor-study", cfg)
    root.write_config(cfg)
    checkpoints = {t.name: _finetuned_checkpoint(cfg, t, out, progress) for t in cfg.targets}
    targets = {t.name: t for t in cfg.targets}

    base: BaseWeights | None = None

    def model() -> BaseWeights:
        nonlocal base
        if base is None:
            base = BaseWeights(cfg)
        return base

    base_run = sub_run(out, "base", "eval")
    if not base_run.is_done():
        ev = eval_config(cfg, [*cfg.original, *(t.dataset for t in cfg.targets)])
        _evaluate(model(), ev, base_run, _prefixed(progress, "base"), {"model": "base"})
    for target in cfg.targets:
        sub = sub_run(out, Path("finetune") / target.name, "eval")
        if sub.is_done():
            continue
        ev = eval_config(cfg, [*cfg.original, target.dataset])
        _with_finetuned(model(), checkpoints[target.name],
                        lambda: _evaluate(model(), ev, sub, _prefixed(progress, f"fine-tuned {target.name}"),
                                          {"model": "finetuned", "target": target.name,
                                           "checkpoint": str(checkpoints[target.name])}))
    calib_cache: dict[str, list[dict[str, Any]]] = {}
    for spec in plan(cfg):
        sub = sub_run(out, Path(spec.group) / spec.folder_name, "eval")
        if sub.is_done():
            log.info("%s/%s: done, skipped", spec.group, spec.folder_name)
            continue
        _run_sub(cfg, spec, sub, model(), [checkpoints[t] for t in spec.targets], [targets[t] for t in spec.targets],
                 calib_cache, progress)
        gc.collect()

    from ..reports.tailor import write_tailor_report

    write_tailor_report(out)
    return out


def _finetuned_checkpoint(cfg: TailorStudyConfig, target: TargetTask, out: Path,
                          progress: ProgressFn | None) -> Path:
    """The target's fine-tuned weights: the given checkpoint, or the study's own fine-tuning (run or resumed)."""
    from ..tailoring.run import resolve_finetuned
    from ..training.checkpoints import latest_checkpoint

    if target.checkpoint:
        return resolve_finetuned(target.checkpoint)
    train_dir = out / "finetune" / target.name / "train"
    if (train_dir / "DONE").exists():
        done = latest_checkpoint(train_dir)
        if done is not None:
            return done.path
    from ..training.trainer import finetune

    t = cfg.train
    ft = t.finetune_config(model=cfg.model, data=t.data_config([target.dataset]), method=t.method,
                           method_options=t.method_options, lr=t.lr, epochs=t.epochs, seed=t.seed, out=str(train_dir))
    log.info("fine-tuning %s on %s (%s)", target.name, target.dataset, t.method)
    result = finetune(ft, progress=_prefixed(progress, f"fine-tune {target.name}"))
    atomic_write_json(train_dir / "train_result.json", result.to_dict())
    del result
    gc.collect()
    if result_path := latest_checkpoint(train_dir):
        RunDir(train_dir).mark_done()
        return result_path.path
    raise ConfigError(f"fine-tuning {target.name} wrote no checkpoint in {train_dir}")


def _evaluate(base: BaseWeights, ev: EvalConfig, run: RunDir, progress: ProgressFn | None,
              info: dict[str, Any]) -> None:
    from ..evaluation.evaluator import evaluate

    result = evaluate(ev, lm=base.lm, run=run, progress=progress)
    run.write_metrics({**info, "eval": result.to_dict()})
    run.mark_done()


def _with_finetuned(base: BaseWeights, checkpoint_path: Path, action: Callable[[], None]) -> None:
    from ..tailoring import open_checkpoint

    checkpoint = open_checkpoint(checkpoint_path, base=base.checkpoint)
    keys = list(checkpoint.changed_keys())
    base.load(checkpoint, keys)
    try:
        action()
    finally:
        base.restore(keys)


def _calibration(cfg: TailorStudyConfig, base: BaseWeights, target: TargetTask,
                 cache: dict[str, list[dict[str, Any]]], progress: ProgressFn | None) -> list[dict[str, Any]]:
    if target.name not in cache:
        from ..tailoring.calibration_set import calibration_batches

        c = cfg.calib
        cache[target.name] = calibration_batches(base.lm, target.dataset, split=c.split, limit=c.limit,
                                                 sampling=c.sampling,
                                                 batch_size=c.batch_size, template=c.template, progress=progress)
    return cache[target.name]


def _run_sub(cfg: TailorStudyConfig, spec: SubRun, sub: RunDir, base: BaseWeights, checkpoints: list[Path],
             targets: list[TargetTask], calib_cache: dict[str, list[dict[str, Any]]],
             progress: ProgressFn | None) -> None:
    from ..tailoring import TailorPatch, open_checkpoint, tailor, write_tailored
    from ..tailoring.run import needs_calibration

    label = f"{spec.group}/{spec.folder_name}"
    atomic_write_json(sub.file("spec.json"), spec.to_dict())
    patch_path = sub.file("patch.safetensors")
    if patch_path.is_file() and sub.file("tailor.json").is_file():
        patch = TailorPatch.load(patch_path)
    else:
        options = spec.options()
        batches = None
        if needs_calibration(spec.arm.method, options):
            batches = [_calibration(cfg, base, t, calib_cache, progress) for t in targets]
        finetuned = [open_checkpoint(p, base=base.checkpoint) for p in checkpoints]
        touched = sorted({k for c in finetuned for k in c.changed_keys()})
        log.info("%s: tailoring", label)
        try:
            # calibration runs on the study's model (no second copy in memory); its weights come back after
            result = tailor(base.checkpoint, finetuned, batches, spec.arm.method, modules=cfg.modules,
                            device=None if cfg.device == "auto" else cfg.device,
                            model_loader=lambda folder: base.lm.model, **options)
        finally:
            base.restore(touched)
        if cfg.save_patches:
            write_tailored(result, patch_path, format="patch")
        atomic_write_json(sub.file("tailor.json"), result.summary())
        patch = result.patch
    keys = list(patch.tensors)
    patch.apply_to(base.lm.model)
    try:
        ev = eval_config(cfg, [*cfg.original, *(t.dataset for t in targets)])
        _evaluate(base, ev, sub, _prefixed(progress, label), spec.to_dict())
    finally:
        base.restore(keys)


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda label, done, total: progress(f"{prefix} {label}" if label != "train" else prefix, done, total)


def read_spec(folder: Path) -> dict[str, Any] | None:
    path = folder / "spec.json"
    return read_json(path) if path.exists() else None


STUDIES.register("tailor", Study("tailor", TailorStudyConfig, run_tailor_study,
                                 "Model Tailor vs weight merging: original-task retention and target-task reach"),
                 description="Model Tailor sparsity sweep vs merging baselines: retention of the original tasks, "
                             "reach on the target task(s)")

__all__ = ["HeadlineCheck", "StudyCalibration", "SubRun", "TailorStudyConfig", "TailorTrain", "TailoringArm",
           "TargetTask", "plan", "run_tailor_study"]
