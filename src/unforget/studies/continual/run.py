"""Running the continual-learning study: a sequence of tasks trained one after another, every task evaluated after each.

For each strategy (:mod:`unforget.studies.continual.strategies`: naive, regularised, replay, ewc, l2, lwf,
model-tailor) the running model starts as the base model and is fine-tuned on task 0, 1, ..., T-1 in turn; after
each task every task's test set is evaluated, which fills the accuracy matrix ``R[i][j]`` (accuracy on task j after
training task i). The base model's accuracies ``b[j]`` are measured once. The summary
(:mod:`unforget.studies.continual.summary`) computes ACC, BWT, FWT and forgetting with intervals from the per-sample
records and checks that the regularised and data-hybrid strategies forget less than naive fine-tuning.

Run folder (``runs/continual/<name>/``)::

    config.yaml                     the resolved study config
    probe_base.safetensors          the base model's next-token distributions on the probe set (probe.enabled)
    base/                           the base model on every task: samples.jsonl, metrics.json (tasks),
                                    probe.jsonl (step -1), DONE
    <strategy>/step-<i>-<task>/     task i of one strategy:
        train/                      the fine-tuning run folder (checkpoints, train_log.jsonl, regularizer state)
        weights.safetensors         the running model's tensors this step changed (exact values)
        model-tailor.json           model-tailor: what the graft kept (a strategy's after-training summary)
        samples.jsonl, metrics.json every task evaluated after this step
        probe.jsonl                 the judge-free probe after this step (KL from the base model per task)
        DONE
    metrics.json, report.html, report.md, plots/   the summary, built from the folders above only

Every step resumes: a strategy continues at its first step without DONE; the running model is the base model with
the ``weights.safetensors`` of the steps before applied in order (bit for bit what the uninterrupted run held). An
interrupted fine-tuning continues from its last checkpoint, an interrupted evaluation from its last sample. The
study keeps one copy of the running weights in CPU memory during each step (to find what the step changed).
"""

from __future__ import annotations

import gc
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file

from ...checks import open_checked_run
from ...config import to_dict
from ...data import load_dataset
from ...errors import ModelLoadError, TrainingError
from ...evaluation.config import EvalConfig
from ...evaluation.evaluator import evaluate
from ...models.feature_cache import CACHE_FOLDER, cached_vision_tower, vision_feature_cache
from ...models.loading import LoadedModel, load_configured_model
from ...runs import RunDir, atomic_write_json, sub_run
from ...training import trainer
from ...training.regularizers import write_state
from ..base import STUDIES
from ..probing import base_file, base_probe_pending, load_base_distributions, make_probe, record_probe
from ..report import write_study_report
from .config import ContinualConfig, StrategyRun, default_plan, eval_config
from .layout import BASE_DIR, WEIGHTS_FILE, step_folder_name
from .strategies import STRATEGIES, Step, Strategy

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def run_continual(cfg: ContinualConfig, progress: ProgressFn | None = None) -> Path:
    """Run (or resume) the study into its folder and write its summary and report there; returns the folder."""
    out = Path(cfg.out or Path("runs") / "continual" / cfg.name)
    # a frozen vision tower runs once per image for the whole study: every step, evaluation and strategy
    with vision_feature_cache(cfg.train.cache_vision_features, out / CACHE_FOLDER):
        return _run_continual(cfg, out, progress)


def _run_continual(cfg: ContinualConfig, out: Path, progress: ProgressFn | None) -> Path:
    root = open_checked_run(out, "continual", cfg)
    root.write_config(cfg)
    ev = eval_config(cfg)

    base_run = sub_run(out, BASE_DIR, "eval")
    # the tasks change, so no set's labels are "the fine-tuning labels": label mass only when probe.label_set names one
    probe = make_probe(cfg.probe, cfg.tasks, None)
    if not base_run.is_done() or base_probe_pending(probe, out, base_run, {"step": -1}):
        lm = load_running_model(cfg, [])
        with cached_vision_tower(lm.model):
            if probe is not None:
                probe.prepare(lm, base_file(out))
                record_probe(probe, lm, base_run, {"step": -1}, 1.0 - cfg.alpha)
            if not base_run.is_done():
                log.info("evaluating the base model on %s", ", ".join(cfg.tasks))
                result = evaluate(ev, lm=lm, run=base_run, progress=_prefixed(progress, "base"), tag={"step": -1})
                tasks = [{"index": i, "ref": ref, "dataset": load_dataset(ref).name}
                         for i, ref in enumerate(cfg.tasks)]
                base_run.write_metrics({"tasks": tasks, **result.to_dict()})
                base_run.mark_done()
        del lm

    for arm in cfg.strategies:
        _run_strategy(cfg, arm, out, ev, progress, probe)
        gc.collect()

    write_study_report(out, STUDIES.get("continual"))
    return out


def _step_run(folder: Path) -> RunDir:
    """A step's folder (``out/<strategy>/<step>``) as a sub-run of the study folder two levels up."""
    root = folder.parents[1]
    return sub_run(root, folder.relative_to(root), "eval")


def step_folders(cfg: ContinualConfig, out: Path, arm: StrategyRun) -> list[Path]:
    return [out / arm.name / step_folder_name(i, ref) for i, ref in enumerate(cfg.tasks)]


def _run_strategy(cfg: ContinualConfig, arm: StrategyRun, out: Path, ev: EvalConfig,
                  progress: ProgressFn | None, probe: Any = None) -> None:
    folders = step_folders(cfg, out, arm)
    first = next((i for i, f in enumerate(folders) if not RunDir(f).is_done()), None)
    if first is None:
        log.info("%s: every step done, skipped", arm.name)
        return
    strategy = STRATEGIES.get(arm.strategy)
    options = strategy.parse_options(arm.options)
    lm = load_running_model(cfg, folders[:first])
    for index in range(first, len(cfg.tasks)):
        folder = folders[index]
        if RunDir(folder).is_done():  # a later step left done after an earlier one was redone
            apply_weights(lm.model, folder / WEIGHTS_FILE)
            continue
        step = Step(index, tuple(cfg.tasks), folder, default_plan(cfg, index))
        label = f"{arm.name} {step_folder_name(index, step.task)}"
        lm = _train_step(cfg, arm, strategy, options, step, lm, _prefixed(progress, label))
        if probe is not None:
            load_base_distributions(probe, lm, out)
        _evaluate_step(cfg, arm, step, lm, ev, _prefixed(progress, label), probe)


def _train_step(cfg: ContinualConfig, arm: StrategyRun, strategy: Strategy, options: Any, step: Step,
                lm: LoadedModel, progress: ProgressFn | None) -> LoadedModel:
    """Fine-tune the running model on the step's task (or put back the step's saved result) and return it."""
    sub = _step_run(step.folder)
    weights = step.folder / WEIGHTS_FILE
    if weights.is_file():
        apply_weights(lm.model, weights)
        return lm
    before = weights_snapshot(lm.model)
    plan = strategy.plan(step, options)
    t = cfg.train
    ft = t.finetune_config(model=cfg.model, data=plan.data, method=plan.method, method_options=plan.method_options,
                           lr=plan.lr, epochs=plan.epochs, seed=cfg.seed, regularizer=plan.regularizer,
                           out=str(step.folder / "train"))
    ft.regularizer.validate()
    log.info("%s: task %d (%s), method %s, regularizer %s", arm.name, step.index, step.task, plan.method,
             plan.regularizer.name or "none")
    result = trainer.finetune(ft, lm=lm, progress=progress)
    lm = merged(result.lm)
    atomic_write_json(sub.file("train_result.json"), {**result.to_dict(), "plan": to_dict(plan)})
    if strategy.after_training is not None:
        summary = strategy.after_training(step, options, lm, before)
        if summary is not None:
            atomic_write_json(sub.file(f"{arm.strategy}.json"), summary)
    changed = changed_tensors(lm.model, before)
    del before
    save_weights(weights, changed)
    if not cfg.keep_checkpoints:
        shutil.rmtree(step.folder / "train" / "checkpoints", ignore_errors=True)
    return lm


def _evaluate_step(cfg: ContinualConfig, arm: StrategyRun, step: Step, lm: LoadedModel, ev: EvalConfig,
                   progress: ProgressFn | None, probe: Any = None) -> None:
    sub = _step_run(step.folder)
    with cached_vision_tower(lm.model):
        result = evaluate(ev, lm=lm, run=sub, progress=progress, tag={"step": step.index})
        probed = record_probe(probe, lm, sub, {"step": step.index}, 1.0 - cfg.alpha)
    sub.write_metrics({"strategy": arm.name, "step": step.index, "task": step.task,
                       "accuracy": {name: r.metrics.accuracy for name, r in result.results.items()},
                       **result.to_dict(), **({"probe": probed} if probed is not None else {})})
    sub.mark_done()


# ------------------------------------------------------------------------------------------ the running model


def load_running_model(cfg: ContinualConfig, done_steps: list[Path]) -> LoadedModel:
    """The base model with the saved weights of ``done_steps`` applied in order."""
    lm = load_configured_model(cfg.model)
    if cfg.model.adapter:
        lm.model = lm.model.merge_and_unload()  # as training does: the adapter folded into one ordinary model
    for folder in done_steps:
        apply_weights(lm.model, folder / WEIGHTS_FILE)
    lm.model.eval()
    return lm


def merged(lm: LoadedModel) -> LoadedModel:
    """``lm`` with a peft adapter folded into its weights (the next task starts from one ordinary model)."""
    model = lm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    return LoadedModel(model, lm.processor, lm.family, lm.source)


def weights_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the model's state dict, copied to CPU."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}


def changed_tensors(model: torch.nn.Module, before: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` whose values differ from ``before`` (same names), on CPU."""
    state = model.state_dict()
    if set(state) != set(before):
        extra = sorted(set(state) ^ set(before))
        raise TrainingError(f"the model's tensors changed names during the step (e.g. '{extra[0]}'); a fine-tuning "
                            "method left its wrapper in place")
    out = {}
    for name, tensor in state.items():
        value = tensor.detach().cpu()
        if value.shape != before[name].shape or not torch.equal(value, before[name]):
            out[name] = value.clone().contiguous()
    return out


def save_weights(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    write_state(path, tensors, {"format": "unforget-continual-step/1"})


def apply_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy a step's saved tensors into the model (exact values)."""
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the step is marked done but its weights are gone; delete the "
                             "step's DONE (and those of the later steps) to redo it")
    tensors = load_file(str(path))
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ModelLoadError(f"{path} holds tensors this model does not have (e.g. '{result.unexpected_keys[0]}'): "
                             "it was written for another model")


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda label, done, total: progress(f"{prefix} {label}", done, total)
