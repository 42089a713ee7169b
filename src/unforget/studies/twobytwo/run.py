"""Running the 2x2 study: the base model on the four cells (and the replay sets), then every run of the plan,
each fine-tuned, evaluated, probed and scored for language; then the report. Every step resumes (the layout and
what resumes: :mod:`unforget.studies.twobytwo`)."""

from __future__ import annotations

import gc
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from ...checks import open_checked_run
from ...data import load_dataset
from ...errors import ConfigError
from ...evaluation.config import EvalConfig
from ...evaluation.evaluator import evaluate
from ...models.feature_cache import CACHE_FOLDER, cached_vision_tower, vision_feature_cache
from ...models.loading import load_configured_model
from ...reports.language import language_row
from ...runs import RunDir, atomic_write_json, sub_run
from ...training import trainer
from ...training.config import TrainDataConfig
from ...training.data import describe_items, training_items
from ...training.methods.base import METHODS
from ..base import STUDIES
from ..language_scores import record_language, text_dataset
from ..probing import base_file, base_probe_pending, load_base_distributions, make_probe, record_probe
from ..report import write_study_report
from .config import TwoByTwoConfig
from .plan import RunSpec, eval_config, hybrid_plan, replay_counts_needed, sweep_plan, train_dataset
from .replay import replay_ready, replay_reference, write_replay_set

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def run_twobytwo(cfg: TwoByTwoConfig, progress: ProgressFn | None = None) -> Path:
    study = STUDIES.get("2x2")
    out = Path(cfg.out or Path("runs") / study.name / cfg.name)
    # a frozen vision tower runs once per image for the whole study: the base model and every run of the sweep
    with vision_feature_cache(cfg.train.cache_vision_features, out / CACHE_FOLDER):
        return _run_twobytwo(cfg, study, out, progress)


def _run_twobytwo(cfg: TwoByTwoConfig, study: Any, out: Path, progress: ProgressFn | None) -> Path:
    root = open_checked_run(out, study.run_kind, cfg)
    root.write_config(cfg)
    write_cell_names(cfg, root)
    ev = eval_config(cfg)
    base_run = sub_run(out, "base", "eval")
    need_replay = {name: n for name, n in replay_counts_needed(cfg).items() if n > 0} if cfg.hybrid.enabled() else {}
    replay_refs = {name: replay_reference(out / "replay" / name) for name in need_replay}
    todo_replay = [s for s in cfg.hybrid.sources if s.name in need_replay
                   and not replay_ready(out / "replay" / s.name, need_replay[s.name])]
    # the probe on the four cells, label tokens of the fine-tuning set; base distributions once, in the folder
    probe = make_probe(cfg.probe, list(cfg.cells.refs().values()), train_dataset(cfg))
    text = text_dataset(cfg.language, ev.datasets)
    language_pending = text is not None and language_row(base_run.path, epoch=0) is None
    if not _evaluated(base_run, ev) or todo_replay or base_probe_pending(probe, out, base_run, {"epoch": 0}) \
            or language_pending:
        lm = load_configured_model(cfg.model)
        if probe is not None:
            probe.prepare(lm, base_file(out))
            record_probe(probe, lm, base_run, {"epoch": 0}, 1.0 - cfg.alpha)
        language = record_language(cfg.language, text, lm, base_run, {"epoch": 0}, 1.0 - cfg.alpha)
        if not _evaluated(base_run, ev):
            log.info("evaluating the base model on the four cells")
            with cached_vision_tower(lm.model):
                result = evaluate(ev, lm=lm, run=base_run, progress=_prefixed(progress, "base"), tag={"epoch": 0})
            base_run.write_metrics({"epoch": 0, **result.to_dict(), **({"language": language} if language else {})})
            base_run.mark_done()
        for source in todo_replay:
            write_replay_set(lm, source, need_replay[source.name], sub_run(out, Path("replay") / source.name, "eval"), ev,
                             _prefixed(progress, f"replay {source.name}"))
        del lm
        _free_memory()

    # the vision encoder baselines of classification cells are the base model's; runs do not repeat them
    run_ev = replace(ev, baselines=[])
    for spec in [*sweep_plan(cfg), *hybrid_plan(cfg, replay_refs)]:
        sub = sub_run(out, spec.name, "eval")
        if _evaluated(sub, run_ev):
            log.info("%s: done, skipped", spec.name)
            continue
        _run_spec(cfg, spec, sub, run_ev, progress, probe)
        sub.mark_done()
        _free_memory()

    write_study_report(out, study)
    return out


def write_cell_names(cfg: TwoByTwoConfig, root: RunDir) -> dict[str, str]:
    """Cell -> the name its records carry (the loaded dataset's name), written to ``cells.json`` for the report.

    Records are told apart by that name: a dataset loaded from a path is named by its reference (two
    ``jsonl:.../test.jsonl`` files stay apart), so only two cells given the very same reference collide, an
    error."""
    names = {key: load_dataset(ref).name for key, ref in cfg.cells.refs().items()}
    if len(set(names.values())) < len(names):
        raise ConfigError(f"two cells load as datasets of the same name ({names}), so their answers could not be "
                          "told apart; give each a distinct reference, e.g. jsonl:/data/task/test.jsonl?name=task")
    for key, name in names.items():
        if name != getattr(cfg.cells, key):
            log.warning("cell %s loads as dataset '%s', not as its reference: an interrupted evaluation of it "
                        "starts that cell over; add an option (?name=%s) to name it by its reference", key, name, name)
    atomic_write_json(root.file("cells.json"), {key: {"ref": getattr(cfg.cells, key), "dataset": name}
                                                for key, name in names.items()})
    return names


def _evaluated(run: RunDir, ev: EvalConfig) -> bool:
    """DONE, and its metrics cover every cell (a cell added to the config later is evaluated then)."""
    if not run.is_done():
        return False
    metrics = run.read_metrics() or {}
    datasets = (metrics.get("eval") or metrics).get("datasets") or {}
    return all(ref in datasets for ref in ev.datasets)


def _run_spec(cfg: TwoByTwoConfig, spec: RunSpec, sub: RunDir, ev: EvalConfig, progress: ProgressFn | None,
              probe: Any = None) -> None:
    t = cfg.train
    if spec.kind == "hybrid":  # its size is the budget of the mix, not a number per dataset
        data = t.data_config(spec.datasets, limit=None, mix_strategy=cfg.hybrid.mix_strategy,
                             interleave_probs=spec.interleave_probs, budget=spec.budget, mix_by=spec.mix_by)
    else:
        data = t.data_config(spec.datasets)
    lr = spec.lr if spec.lr is not None else METHODS.get(spec.method.method).default_lr
    atomic_write_json(sub.file("spec.json"), {**spec.to_dict(), "lr": lr, "seed": cfg.seed})
    ft = t.finetune_config(model=cfg.model, data=data, method=spec.method.method, method_options=spec.method.options,
                           lr=lr, epochs=spec.epochs, seed=cfg.seed, out=str(sub.path / "train"))
    log.info("%s: %s, lr %g, %d epoch(s), data %s", spec.name, spec.method.name, lr, spec.epochs, spec.datasets)
    result = trainer.finetune(ft, progress=_prefixed(progress, f"{spec.name} train"))
    with cached_vision_tower(result.lm.model):
        evaluation = evaluate(ev, lm=result.lm, run=sub, progress=_prefixed(progress, spec.name),
                              tag={"epoch": result.epochs_done})
    probed = None
    if probe is not None:
        load_base_distributions(probe, result.lm, sub.path.parents[1])
        probed = record_probe(probe, result.lm, sub, {"epoch": result.epochs_done}, 1.0 - cfg.alpha)
    language = record_language(cfg.language, text_dataset(cfg.language, ev.datasets), result.lm, sub,
                               {"epoch": result.epochs_done}, 1.0 - cfg.alpha)
    sub.write_metrics({
        **spec.to_dict(), "lr": lr, "seed": cfg.seed, "epochs_done": result.epochs_done,
        "trainable_parameters": result.trainable_parameters, "total_parameters": result.total_parameters,
        "final_loss": result.final_loss, "train_seconds": result.seconds, "train_examples": _train_examples(data),
        "eval": evaluation.to_dict(), "probe": probed, "language": language,
    })


def _train_examples(data: TrainDataConfig) -> dict[str, int]:
    """How many examples each training source gave (after mixing), from the training log's counts."""
    items, _ = training_items(data)
    return describe_items(items)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda label, done, total: progress(f"{prefix} {label}" if label != "train" else prefix, done, total)
