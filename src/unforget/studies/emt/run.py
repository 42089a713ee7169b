"""The EMT study (arXiv 2309.10313): fine-tune on one dataset, evaluate every dataset after every epoch.

Run folder (``runs/emt/<name>/``)::

    config.yaml                  the resolved study config
    probe_base.safetensors       the base model's next-token distributions on the probe set (probe.enabled)
    base/                        the base model: samples.jsonl (epoch 0), metrics.json (with encoder baselines),
                                 probe.jsonl and language.jsonl (epoch 0)
    <method>[-s<seed>]/          one fine-tuning run per method (and seed)
        train/                   the fine-tuning run folder (checkpoints, train_log.jsonl)
        samples.jsonl            every judged sample, tagged with its epoch
        alignment.jsonl          visual-text alignment per epoch and dataset
        probe.jsonl              the judge-free forgetting probe per epoch (KL from the base model, label mass)
        language.jsonl           answer log-likelihood and held-out perplexity per epoch (a "text" set evaluated)
        metrics.json             per-epoch metrics of every dataset
        DONE
    metrics.json, report.html, report.md, plots/   the summary, built from the folders above only

Every step resumes: a finished base evaluation or method run is not redone; an interrupted fine-tuning run
continues from its last checkpoint; an interrupted evaluation continues from its last sample.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ...checks import open_checked_run
from ...data import load_dataset
from ...data.sampling import select_split
from ...errors import ConfigError
from ...evaluation.alignment import alignment_unsupported, visual_text_alignment
from ...evaluation.config import EvalConfig
from ...evaluation.evaluator import evaluate
from ...evaluation.probe import ForgettingProbe
from ...models.feature_cache import CACHE_FOLDER, cached_vision_tower, vision_feature_cache
from ...models.loading import LoadedModel, load_configured_model
from ...runs import RunDir, atomic_write_json, read_jsonl, sub_run
from ...scale.sharding import current_shard
from ...training.trainer import finetune
from ..base import STUDIES
from ..language_scores import record_language, text_dataset
from ..probing import base_file, make_probe, record_probe
from ..report import write_study_report
from .config import EmtConfig, MethodRun, arm_folder
from ...runs.layout import ALIGNMENT_FILE

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def eval_config(cfg: EmtConfig) -> EvalConfig:
    """The evaluation every epoch runs: the study's eval settings, the fine-tuning set's labels as leaks."""
    leak = list(dict.fromkeys([*cfg.eval.leak_labels, cfg.train.dataset]))
    return replace(cfg.eval, model=cfg.model, leak_labels=leak)


def epoch_eval_config(ev: EvalConfig) -> EvalConfig:
    """After each epoch: the same evaluation without the encoder baselines (the vision tower is frozen by every
    method but ``full`` with freeze_vision_tower=false, so the base model's baselines hold)."""
    return replace(ev, baselines=[])


def run_emt(cfg: EmtConfig, progress: ProgressFn | None = None) -> Path:
    out = Path(cfg.out or Path("runs") / "emt" / cfg.name)
    # a frozen vision tower runs once per image for the whole study: the base model, every epoch, every arm
    with vision_feature_cache(cfg.train.cache_vision_features, out / CACHE_FOLDER):
        return _run_emt(cfg, out, progress)


def _run_emt(cfg: EmtConfig, out: Path, progress: ProgressFn | None) -> Path:
    # under accelerate launch every process runs the study: evaluations are sharded over them, fine-tuning is
    # DDP, and the main process alone writes the study's files (probe, alignment, metrics, report)
    main = current_shard().is_main
    root = open_checked_run(out, "emt", cfg, main=main)
    if main:
        root.write_config(cfg)
    ev = eval_config(cfg)
    lm = load_configured_model(cfg.model)
    with cached_vision_tower(lm.model):
        probe = _evaluate_base(cfg, ev, lm, out, progress, main)

    for seed in cfg.seeds:
        for arm in cfg.methods:
            folder = arm_folder(out, arm, seed, cfg.seeds)
            sub = sub_run(out, folder.relative_to(out), "eval")
            if sub.is_done():
                log.info("%s: done, skipped", folder.name)
                continue
            _run_arm(cfg, arm, seed, sub, epoch_eval_config(ev), progress, probe, main)
            if main:
                sub.mark_done()

    if main:
        write_study_report(out, STUDIES.get("emt"))
    return out


def _evaluate_base(cfg: EmtConfig, ev: EvalConfig, lm: LoadedModel, out: Path, progress: ProgressFn | None,
                   main: bool) -> ForgettingProbe | None:
    """The base model's probe distributions, evaluation, language scores and alignment (epoch 0); the probe."""
    probe = _make_probe(cfg, ev, lm, out) if main else None
    base_run = sub_run(out, "base", "eval")
    _write_probe(cfg, probe, lm, base_run, 0, {})
    base_language = _write_language(cfg, ev, lm, base_run, 0, {}) if main else None
    if not base_run.is_done():
        log.info("evaluating the base model on %s", ", ".join(ev.datasets))
        result = evaluate(ev, lm=lm, run=base_run, progress=_prefixed(progress, "base"), tag={"epoch": 0})
        if main:
            base_run.write_metrics({"epoch": 0, **result.to_dict(),
                                    **({"language": base_language} if base_language else {})})
            _write_alignment(lm, cfg, base_run, 0)
            base_run.mark_done()
    return probe


def _run_arm(cfg: EmtConfig, arm: MethodRun, seed: int, sub: RunDir, ev: EvalConfig,
             progress: ProgressFn | None, probe: ForgettingProbe | None = None, main: bool = True) -> None:
    t = cfg.train
    ft = t.finetune_config(model=cfg.model, data=t.data_config([t.dataset]), method=arm.method,
                           method_options=arm.options, lr=arm.lr, epochs=arm.epochs or t.epochs, seed=seed,
                           out=str(sub.path / "train"))
    writer = _tensorboard(cfg, sub) if main else None
    per_epoch: dict[str, Any] = (sub.read_metrics() or {}).get("epochs", {})

    def on_epoch_end(epoch: int, lm: LoadedModel) -> None:
        result = evaluate(ev, lm=lm, run=sub, progress=_prefixed(progress, f"{sub.path.name} epoch {epoch}"),
                          tag={"epoch": epoch, "seed": seed})
        if not main:
            return
        per_epoch[str(epoch)] = result.to_dict()
        probed = _write_probe(cfg, probe, lm, sub, epoch, {"seed": seed})
        if probed is not None:
            per_epoch[str(epoch)]["probe"] = probed
        language = _write_language(cfg, ev, lm, sub, epoch, {"seed": seed})
        if language is not None:
            per_epoch[str(epoch)]["language"] = language
        _write_alignment(lm, cfg, sub, epoch)
        atomic_write_json(sub.metrics_path, {"method": arm.method, "name": arm.name, "seed": seed,
                                             "epochs": per_epoch})
        if writer is not None:
            for name, r in result.results.items():
                writer.add_scalar(f"accuracy/{name}", r.metrics.accuracy, epoch)
            writer.flush()

    # the model is loaded afresh for every arm: fine-tuning changes it in place
    result = finetune(ft, on_epoch_end=on_epoch_end, progress=_prefixed(progress, f"{sub.path.name} train"),
                      epoch_end_on_every_process=True)
    if not main:
        return
    atomic_write_json(sub.file("train_result.json"), result.to_dict())
    if writer is not None:
        for step, loss in enumerate(result.losses, 1):
            writer.add_scalar("train/loss", loss, step)
        writer.close()


def _make_probe(cfg: EmtConfig, ev: EvalConfig, lm: LoadedModel, out: Path) -> ForgettingProbe | None:
    """The forgetting probe on the evaluated datasets, label tokens of the fine-tuning set; the base model's
    distributions are computed once and kept in the run folder (None when probe.enabled is false)."""
    probe = make_probe(cfg.probe, ev.datasets, cfg.train.dataset)
    if probe is not None:
        probe.prepare(lm, base_file(out))
    return probe


def _write_probe(cfg: EmtConfig, probe: ForgettingProbe | None, lm: LoadedModel, run: RunDir, epoch: int,
                 tag: dict[str, Any]) -> dict[str, Any] | None:
    """Measure the probe after ``epoch`` and append it to ``run``'s probe.jsonl (once: a rerun reads it back)."""
    return record_probe(probe, lm, run, {"epoch": epoch, **tag}, 1.0 - cfg.alpha)


def _write_language(cfg: EmtConfig, ev: EvalConfig, lm: LoadedModel, run: RunDir, epoch: int,
                    tag: dict[str, Any]) -> dict[str, Any] | None:
    """Measure the language scores after ``epoch`` and append them to ``run``'s language.jsonl (once: a rerun reads
    them back); None when no "text" set is evaluated or language.enabled is false."""
    return record_language(cfg.language, text_dataset(cfg.language, ev.datasets), lm, run, {"epoch": epoch, **tag},
                           1.0 - cfg.alpha)


def _write_alignment(lm: LoadedModel, cfg: EmtConfig, run: RunDir, epoch: int) -> None:
    if cfg.alignment_limit <= 0:
        return
    reason = alignment_unsupported(lm)
    if reason is not None:
        log.warning("visual-text alignment left out: %s", reason)
        return
    done = {(r["epoch"], r["dataset"]) for r in read_jsonl(run.file(ALIGNMENT_FILE))}
    with run.appender(ALIGNMENT_FILE) as app:
        for name in cfg.eval.datasets:
            ds = load_dataset(name)
            if ds.task != "classification" or (epoch, ds.name) in done:
                continue
            samples, _ = select_split(ds, cfg.eval.split, cfg.alignment_limit, strategy=cfg.eval.sampling,
                                      seed=cfg.eval.seed)
            res = visual_text_alignment(lm, ds.name, [s.load_image(ds.name) for s in samples],
                                        [s.label for s in samples], ds.class_names)
            app.write({"epoch": epoch, **res.to_dict()})


def _tensorboard(cfg: EmtConfig, sub: RunDir) -> Any:
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # an optional dependency, for tensorboard: true
    except ImportError as exc:
        raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from exc
    return SummaryWriter(str(sub.path / "tb"))


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda label, done, total: progress(f"{prefix} {label}" if label != "train" else prefix, done, total)
