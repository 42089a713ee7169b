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

import gc
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ...checks import open_checked_run
from ...errors import ConfigError
from ...evaluation.config import EvalConfig
from ...evaluation.evaluator import evaluate
from ...models.loading import load_configured_model
from ...runs import RunDir, atomic_write_json, sub_run
from ...tailoring import TailorPatch, open_checkpoint, tailor, write_tailored
from ...tailoring.calibration import load_weights_into
from ...tailoring.calibration_set import calibration_batches
from ...tailoring.run import needs_calibration, resolve_finetuned
from ...training.checkpoints import latest_checkpoint
from ...training.trainer import finetune
from ..base import STUDIES
from ..report import write_study_report
from .config import TailorStudyConfig, TargetTask
from .plan import SubRun, plan
from ...runs.layout import DONE

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def eval_config(cfg: TailorStudyConfig, datasets: list[str]) -> EvalConfig:
    return replace(cfg.eval, model=cfg.model, datasets=list(dict.fromkeys(datasets)))


# ------------------------------------------------------------------------------------------------- running


class BaseWeights:
    """The study's one in-memory model and the base checkpoint its weights are restored from."""

    def __init__(self, cfg: TailorStudyConfig):
        self.lm = load_configured_model(cfg.model)
        self.folder = Path(self.lm.source)
        self.checkpoint = open_checkpoint(self.folder)

    def load(self, checkpoint: Any, keys: list[str]) -> None:
        load_weights_into(self.lm.model, checkpoint, keys)

    def restore(self, keys: list[str]) -> None:
        """Put the base values of ``keys`` back (after a fine-tuned model, a patch, or calibration)."""
        self.load(self.checkpoint, keys)


def run_tailor_study(cfg: TailorStudyConfig, progress: ProgressFn | None = None) -> Path:
    study = STUDIES.get("tailor")
    out = Path(cfg.out or Path("runs") / study.name / cfg.name)
    root = open_checked_run(out, study.run_kind, cfg)
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
    write_study_report(out, study)
    return out


def _finetuned_checkpoint(cfg: TailorStudyConfig, target: TargetTask, out: Path,
                          progress: ProgressFn | None) -> Path:
    """The target's fine-tuned weights: the given checkpoint, or the study's own fine-tuning (run or resumed)."""
    if target.checkpoint:
        return resolve_finetuned(target.checkpoint)
    train_dir = out / "finetune" / target.name / "train"
    if (train_dir / DONE).exists():
        done = latest_checkpoint(train_dir)
        if done is not None:
            return done.path
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
    result = evaluate(ev, lm=base.lm, run=run, progress=progress)
    run.write_metrics({**info, "eval": result.to_dict()})
    run.mark_done()


def _with_finetuned(base: BaseWeights, checkpoint_path: Path, action: Callable[[], None]) -> None:
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
        c = cfg.calib
        cache[target.name] = calibration_batches(base.lm, target.dataset, split=c.split, limit=c.limit,
                                                 sampling=c.sampling,
                                                 batch_size=c.batch_size, template=c.template, progress=progress)
    return cache[target.name]


def _run_sub(cfg: TailorStudyConfig, spec: SubRun, sub: RunDir, base: BaseWeights, checkpoints: list[Path],
             targets: list[TargetTask], calib_cache: dict[str, list[dict[str, Any]]],
             progress: ProgressFn | None) -> None:
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


__all__ = ["BaseWeights", "eval_config", "run_tailor_study"]
