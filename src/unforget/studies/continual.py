"""The continual-learning study: a sequence of tasks trained one after another, every task evaluated after each.

For each strategy (:mod:`unforget.studies.continual_strategies`: naive, regularised, replay, ewc, l2, lwf,
model-tailor) the running model starts as the base model and is fine-tuned on task 0, 1, ..., T-1 in turn; after
each task every task's test set is evaluated, which fills the accuracy matrix ``R[i][j]`` (accuracy on task j after
training task i). The base model's accuracies ``b[j]`` are measured once. The report
(:mod:`unforget.reports.continual`) computes ACC, BWT, FWT and forgetting with intervals from the per-sample
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import to_dict
from ..errors import ConfigError, ModelLoadError, TrainingError
from ..evaluation.config import EvalConfig, ProbeConfig
from ..models.config import ModelConfig
from ..reports.continual import BASE_DIR, WEIGHTS_FILE, step_folder_name
from ..training.config import MethodTrainSettings
from ..checks import open_checked_run
from ..runs import RunDir, atomic_write_json, sub_run
from .base import STUDIES, Study
from .probing import base_file, base_probe_pending, load_base_distributions, make_probe, record_probe

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass
class ContinualTrain(MethodTrainSettings):
    """How every task is fine-tuned unless its strategy says otherwise (``regularised`` sets its own recipe)."""

    method_options: dict[str, Any] = field(default_factory=lambda: {"r": 8})
    limit: int | None = 256  # training samples per task, drawn as `sampling` says
    batch_size: int = 16


@dataclass
class StrategyRun:
    """One arm of the study: a registered strategy (``unforget ls``) under a name, with its options."""

    name: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)


def _default_strategies() -> list[StrategyRun]:
    return [StrategyRun("naive", "naive"), StrategyRun("regularised", "regularised"), StrategyRun("replay", "replay"),
            StrategyRun("ewc", "ewc"), StrategyRun("lwf", "lwf"), StrategyRun("model-tailor", "model-tailor")]


@dataclass
class ContinualConfig:
    name: str = "continual"
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: list[str] = field(default_factory=lambda: ["digits", "shapes", "letters", "scenes-vqa"])  # in order
    train: ContinualTrain = field(default_factory=ContinualTrain)
    strategies: list[StrategyRun] = field(default_factory=_default_strategies)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(limit=100))  # its datasets are the tasks
    # judge-free KL probe after every step, on the tasks' test sets (label mass only with probe.label_set)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    alpha: float = 0.05  # significance level of the claim checks; intervals at 1 - alpha
    n_resamples: int = 2000  # bootstrap resamples of the continual metrics' intervals
    keep_checkpoints: bool = True  # false: delete each step's training checkpoints once its weights are saved
    out: str | None = None  # default runs/continual/<name>

    def validate(self) -> None:
        if not self.tasks:
            raise ConfigError("a continual study needs at least one task under `tasks:` (dataset references)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be different dataset references, got {self.tasks}")
        if not self.strategies:
            raise ConfigError("a continual study needs at least one strategy under `strategies:`")
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy names must be unique, got {names}")
        bad = [n for n in names if not n or "/" in n or n.startswith(".") or n == BASE_DIR]
        if bad:
            raise ConfigError(f"strategy names become folder names: '{bad[0]}' is not usable (no '/', no leading "
                              f"'.', not '{BASE_DIR}')")
        from .continual_strategies import STRATEGIES

        for s in self.strategies:
            STRATEGIES.get(s.strategy).parse_options(s.options)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n_resamples < 100:
            raise ConfigError(f"n_resamples must be >= 100, got {self.n_resamples}")


def eval_config(cfg: ContinualConfig) -> EvalConfig:
    """Every evaluation of the study: the study's eval settings on the tasks' test sets."""
    return replace(cfg.eval, model=cfg.model, datasets=list(cfg.tasks), leak_labels=[], baselines=[])


def default_plan(cfg: ContinualConfig, index: int) -> Any:
    from ..training.config import RegularizerConfig
    from .continual_strategies import TrainPlan

    t = cfg.train
    data = t.data_config([cfg.tasks[index]])
    data.validate()
    return TrainPlan(data=data, method=t.method, method_options=dict(t.method_options), lr=t.lr, epochs=t.epochs,
                     regularizer=RegularizerConfig())


def run_continual(cfg: ContinualConfig, progress: ProgressFn | None = None) -> Path:
    from ..data import load_dataset
    from ..evaluation.evaluator import evaluate

    out = Path(cfg.out or Path("runs") / "continual" / cfg.name)
    root = open_checked_run(out, "continual", cfg)
    root.write_config(cfg)
    ev = eval_config(cfg)

    base_run = sub_run(out, BASE_DIR, "eval")
    # the tasks change, so no set's labels are "the fine-tuning labels": label mass only when probe.label_set names one
    probe = make_probe(cfg.probe, cfg.tasks, None)
    if not base_run.is_done() or base_probe_pending(probe, out, base_run, {"step": -1}):
        lm = load_running_model(cfg, [])
        if probe is not None:
            probe.prepare(lm, base_file(out))
            record_probe(probe, lm, base_run, {"step": -1}, 1.0 - cfg.alpha)
        if not base_run.is_done():
            log.info("evaluating the base model on %s", ", ".join(cfg.tasks))
            result = evaluate(ev, lm=lm, run=base_run, progress=_prefixed(progress, "base"), tag={"step": -1})
            tasks = [{"index": i, "ref": ref, "dataset": load_dataset(ref).name} for i, ref in enumerate(cfg.tasks)]
            base_run.write_metrics({"tasks": tasks, **result.to_dict()})
            base_run.mark_done()
        del lm

    for arm in cfg.strategies:
        _run_strategy(cfg, arm, out, ev, progress, probe)
        gc.collect()

    from ..reports.continual import write_continual_report

    write_continual_report(out)
    return out


def _step_run(folder: Path) -> RunDir:
    """A step's folder (``out/<strategy>/<step>``) as a sub-run of the study folder two levels up."""
    root = folder.parents[1]
    return sub_run(root, folder.relative_to(root), "eval")


def step_folders(cfg: ContinualConfig, out: Path, arm: StrategyRun) -> list[Path]:
    return [out / arm.name / step_folder_name(i, ref) for i, ref in enumerate(cfg.tasks)]


def _run_strategy(cfg: ContinualConfig, arm: StrategyRun, out: Path, ev: EvalConfig,
                  progress: ProgressFn | None, probe: Any = None) -> None:
    from .continual_strategies import STRATEGIES, Step

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


def _train_step(cfg: ContinualConfig, arm: StrategyRun, strategy: Any, options: Any, step: Any, lm: Any,
                progress: ProgressFn | None) -> Any:
    """Fine-tune the running model on the step's task (or put back the step's saved result) and return it."""
    from ..training.trainer import finetune

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
    result = finetune(ft, lm=lm, progress=progress)
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


def _evaluate_step(cfg: ContinualConfig, arm: StrategyRun, step: Any, lm: Any, ev: EvalConfig,
                   progress: ProgressFn | None, probe: Any = None) -> None:
    from ..evaluation.evaluator import evaluate

    sub = _step_run(step.folder)
    result = evaluate(ev, lm=lm, run=sub, progress=progress, tag={"step": step.index})
    probed = record_probe(probe, lm, sub, {"step": step.index}, 1.0 - cfg.alpha)
    sub.write_metrics({"strategy": arm.name, "step": step.index, "task": step.task,
                       "accuracy": {name: r.metrics.accuracy for name, r in result.results.items()},
                       **result.to_dict(), **({"probe": probed} if probed is not None else {})})
    sub.mark_done()


# ------------------------------------------------------------------------------------------ the running model


def load_running_model(cfg: ContinualConfig, done_steps: list[Path]) -> Any:
    """The base model with the saved weights of ``done_steps`` applied in order."""
    from ..models.loading import load_configured_model

    lm = load_configured_model(cfg.model)
    if cfg.model.adapter:
        lm.model = lm.model.merge_and_unload()  # as training does: the adapter folded into one ordinary model
    for folder in done_steps:
        apply_weights(lm.model, folder / WEIGHTS_FILE)
    lm.model.eval()
    return lm


def merged(lm: Any) -> Any:
    """``lm`` with a peft adapter folded into its weights (the next task starts from one ordinary model)."""
    from ..models.loading import LoadedModel

    model = lm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    return LoadedModel(model, lm.processor, lm.family, lm.source)


def weights_snapshot(model: Any) -> dict[str, Any]:
    """Every tensor of the model's state dict, copied to CPU."""
    return {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}


def changed_tensors(model: Any, before: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of ``model`` whose values differ from ``before`` (same names), on CPU."""
    import torch

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


def save_weights(path: Path, tensors: Mapping[str, Any]) -> None:
    from ..training.regularizers import write_state

    write_state(path, tensors, {"format": "unforget-continual-step/1"})


def apply_weights(model: Any, path: Path) -> None:
    """Copy a step's saved tensors into the model (exact values)."""
    from safetensors.torch import load_file

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


STUDIES.register("continual", Study("continual", ContinualConfig, run_continual,
                                    "continual learning: a task sequence, accuracy matrix R, ACC/BWT/FWT/forgetting"),
                 description="continual learning over a task sequence: R[i][j], ACC, BWT, FWT, forgetting, strategies")

__all__ = ["ContinualConfig", "ContinualTrain", "StrategyRun", "run_continual"]
