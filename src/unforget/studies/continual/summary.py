"""The continual study's summary (metrics.json), computed from its run folder only, as typed dataclasses.

The folder is read by :mod:`.records`. From the per-sample records:

- ``R[i][j]`` is the accuracy on task j's test samples after step i, ``b[j]`` the base model's; each cell carries a
  Wilson interval at ``1 - alpha``.
- ACC, mean accuracy over time, BWT, FWT and forgetting (:mod:`.metrics`) carry bootstrap intervals over each
  task's test samples (the same samples resampled at every step). They use the samples judged in every evaluation
  of the strategy (base included), so that every figure is paired.
- the claim that each strategy forgets less than naive fine-tuning (:mod:`.claims`);
- the judge-free probe after every step and how its KL ranks the forgetting measured on the earlier tasks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ... import __version__
from ..probing import probe_mean, rank_correlation
from ...stats import Estimate, wilson_interval
from ..preconditions import Precondition, Preconditions, all_of, any_of, hold_back, paired_change
from .claims import CLAIM_ID, ForgetsLessClaim, check_claims
from .metrics import ContinualEstimates, continual_metrics_with_intervals
from .records import (
    ContinualRun,
    Record,
    StepRecords,
    StrategyRecords,
    Task,
    aligned_task_flags,
    correct_by_id,
    judged,
    read_continual_run,
)

PROBE_UNIT = "(strategy, step)"


def _estimate(e: Estimate | None) -> dict[str, Any] | None:
    return e.to_dict() if e is not None else None


@dataclass
class TrainFacts:
    """The study's ``train:`` settings the report states, as its config.yaml records them (None where it does
    not: a folder written by an older version)."""

    method: str | None = None
    method_options: dict[str, Any] | None = None
    lr: float | None = None
    epochs: int | None = None
    split: str | None = None
    limit: int | None = None
    sampling: str = "head"  # what drew the training samples before `sampling` was a setting
    template: int | str | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    warmup_ratio: float | None = None
    weight_decay: float | None = None
    max_grad_norm: float | None = None
    mixed_precision: str | None = None
    gradient_checkpointing: bool | None = None

    @classmethod
    def from_config(cls, train: dict[str, Any]) -> TrainFacts:
        known = {name: train[name] for name in cls.__dataclass_fields__ if name in train}
        return cls(**known)


@dataclass
class EvalFacts:
    """The evaluation settings the report states (from the config's ``eval:``)."""

    split: str | None = None
    mode: str | None = None
    limit: int | None = None
    judges: list[str] | None = None


@dataclass
class StepSummary:
    """Task ``index``'s fine-tuning in one strategy (``folder``: the step folder's name)."""

    index: int
    done: bool
    folder: str
    method: str | None
    lr: float | None
    regularizer: str | None
    trainable_parameters: int | None
    total_parameters: int | None
    optimizer_steps: int | None
    final_loss: float | None
    seconds: float | None
    changed_fraction: float | None  # model-tailor: the grafted share of the considered entries

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Matrix = list[list[Estimate | None]]  # R[i][j] with its interval; None: not evaluated (yet)


@dataclass
class StrategySummary:
    """One strategy: R so far and, once it and the base model are done, the continual metrics on the paired
    samples (``aligned_samples``: how many per task)."""

    name: str
    strategy: str
    options: dict[str, Any]  # the strategy's own options, as configured (each strategy has its own)
    done: bool
    steps_done: list[int]
    accuracy_matrix: Matrix
    metrics: ContinualEstimates | None
    aligned_samples: list[int] | None
    steps: list[StepSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "strategy": self.strategy, "options": self.options, "done": self.done,
                "steps_done": list(self.steps_done),
                "accuracy_matrix": [[_estimate(c) for c in row] for row in self.accuracy_matrix],
                "metrics": self.metrics.to_dict() if self.metrics is not None else None,
                "aligned_samples": self.aligned_samples, "steps": [s.to_dict() for s in self.steps]}


@dataclass
class ProbePoint:
    """The probe after one step of one strategy: KL from the base model on all tasks, on the tasks trained before
    the step (``kl_earlier``) and per task label."""

    strategy: str
    step: int
    kl: float | None
    kl_earlier: float | None
    kl_by_task: dict[str, float | None]
    label_mass: dict[str, Any] | None  # the probe row's, as written (only with probe.label_set)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ForgettingPoint(ProbePoint):
    """A probe point with the forgetting measured on the earlier tasks at that step (:func:`step_forgetting`)."""

    forgetting: float | None = None
    n: int = 0
    drop_from_base: float | None = None
    n_base: int = 0


@dataclass
class ProbeSummary:
    """The probe's curves per strategy, the points with forgetting, and Spearman's rho between the KL on the
    earlier tasks and that forgetting (:func:`unforget.studies.probing.rank_correlation`'s result, as it returns it)."""

    label_set: str | None
    curves: dict[str, list[ProbePoint]]
    points: list[ForgettingPoint]
    correlation_forgetting: dict[str, Any]
    correlation_drop_from_base: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"label_set": self.label_set,
                "curves": {name: [p.to_dict() for p in curve] for name, curve in self.curves.items()},
                "points": [p.to_dict() for p in self.points],
                "correlation": {"forgetting": self.correlation_forgetting,
                                "drop_from_base": self.correlation_drop_from_base}}


@dataclass
class ContinualSummary:
    """What metrics.json holds: the run's settings, b and R per strategy, the metrics, the claims, the probe."""

    name: str | None
    run_dir: str
    model: str | None
    tasks: list[Task]
    train: TrainFacts
    eval: EvalFacts
    alpha: float
    n_resamples: int
    base_done: bool
    base_accuracy: list[Estimate | None]
    strategies: list[StrategySummary]
    claims: list[ForgetsLessClaim]
    probe: ProbeSummary | None
    notes: list[str]
    preconditions: Preconditions = field(default_factory=lambda: Preconditions([]))

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def complete(self) -> bool:
        return bool(self.base_done and self.strategies and all(s.done for s in self.strategies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "continual",
            "unforget_version": __version__,
            "name": self.name,
            "run_dir": self.run_dir,
            "model": self.model,
            "tasks": [asdict(t) for t in self.tasks],
            "train": asdict(self.train),
            "eval": asdict(self.eval),
            "alpha": self.alpha,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "base_done": self.base_done,
            "base_accuracy": [_estimate(e) for e in self.base_accuracy],
            "strategies": [s.to_dict() for s in self.strategies],
            "preconditions": self.preconditions.to_dict(),
            "claims": [c.to_dict() for c in self.claims],
            "probe": self.probe.to_dict() if self.probe is not None else None,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------- summary


def summarise_continual(run_dir: str | Path) -> ContinualSummary:
    """The study's summary (metrics.json), computed from the run folder only, with the claims checked."""
    run = read_continual_run(run_dir)
    cfg = run.config
    ev = cfg.get("eval") or {}
    preconditions = continual_preconditions(run)
    claims = [replace(c, check=hold_back(c.check, CLAIM_ID, preconditions, PRECONDITION_CLAIMS))
              for c in check_claims(run)]
    return ContinualSummary(
        name=cfg.get("name"),
        run_dir=str(run.path),
        model=(cfg.get("model") or {}).get("name"),
        tasks=run.tasks,
        train=TrainFacts.from_config(cfg.get("train") or {}),
        eval=EvalFacts(**{k: ev.get(k) for k in ("split", "mode", "limit", "judges")}),
        alpha=run.alpha,
        n_resamples=run.n_resamples,
        base_done=run.base_done,
        base_accuracy=[_cell_estimate(run.base.get(t.dataset, []), run.alpha) for t in run.tasks],
        strategies=[_summarise_strategy(run, arm) for arm in run.strategies],
        claims=claims,
        probe=probe_summary(run),
        notes=_notes(run),
        preconditions=preconditions,
    )


# ---------------------------------------------------------------------------------------------- preconditions

# the claim ids (`.claims`) that lean on each precondition: with it failed, they are judged on nothing
PRECONDITION_CLAIMS: dict[str, tuple[str, ...]] = {
    "tasks-learned": (CLAIM_ID,),
    "naive-forgets": (CLAIM_ID,),
}


def _paired(a: dict[Any, bool], b: dict[Any, bool]) -> tuple[list[bool], list[bool]]:
    ids = [i for i in a if i in b]
    return [a[i] for i in ids], [b[i] for i in ids]


def continual_preconditions(run: ContinualRun) -> Preconditions:
    """What the claims need of naive sequential fine-tuning (the baseline every claim compares with): each task is
    learnt when it is trained (accuracy on task i after step i above the base model's), and it forgets (accuracy on
    the earlier tasks after the last step below their accuracy after their own step, pooled, i.e. BWT < 0; or the
    first task's alone). One-sided exact McNemar tests on the paired samples."""
    naive = next((a for a in run.strategies if a.strategy == "naive"), None)
    if naive is None:
        return Preconditions([])
    learned = []
    for i, task in enumerate(run.tasks):
        if i >= len(naive.steps) or not naive.steps[i].done:
            continue
        before, after = _paired(correct_by_id(run.base.get(task.dataset, [])),
                                correct_by_id(naive.steps[i].records.get(task.dataset, [])))
        learned.append(paired_change("tasks-learned", "", before, after, "positive", run.alpha,
                                     f"{task.label}: base -> after training it ({naive.name})"))
    checks = [all_of("tasks-learned", f"Each task is learnt when trained ({naive.name}: accuracy on task i after "
                                      "training task i exceeds the base model's)", learned)]
    if len(run.tasks) >= 2 and naive.complete:
        last = naive.steps[-1]
        own_all: list[bool] = []
        last_all: list[bool] = []
        first: Precondition | None = None
        for j, task in enumerate(run.tasks[:-1]):
            own, after = _paired(correct_by_id(naive.steps[j].records.get(task.dataset, [])),
                                 correct_by_id(last.records.get(task.dataset, [])))
            own_all += own
            last_all += after
            if j == 0:
                first = paired_change("naive-forgets", "", own, after, "negative", run.alpha,
                                      f"{task.label} (the first task): after training it -> after the last task")
        parts = [paired_change("naive-forgets", "", own_all, last_all, "negative", run.alpha,
                               "the earlier tasks pooled (BWT): after their own step -> after the last task")]
        parts += [first] if first is not None else []
        checks.append(any_of("naive-forgets", f"Naive sequential fine-tuning ({naive.name}) forgets: BWT < 0 "
                                              "(significant) or the first task's accuracy falls", parts))
    return Preconditions(checks)


def _cell_estimate(records: list[Record], alpha: float) -> Estimate | None:
    kept = judged(records)
    if not kept:
        return None
    return wilson_interval(sum(bool(r["correct"]) for r in kept), len(kept), 1.0 - alpha)


def _summarise_strategy(run: ContinualRun, arm: StrategyRecords) -> StrategySummary:
    n_tasks = len(run.tasks)
    out = StrategySummary(
        arm.name, arm.strategy, arm.options, arm.complete, [s.index for s in arm.steps if s.done],
        [[_cell_estimate(step.records.get(t.dataset, []), run.alpha) if step.done else None for t in run.tasks]
         for step in arm.steps],
        None, None, [_step_summary(s) for s in arm.steps])
    if not (arm.complete and run.base_done):
        return out
    aligned = [aligned_task_flags(run, arm, j) for j in range(n_tasks)]
    out.aligned_samples = [len(ids) for ids, _, _ in aligned]
    if min(out.aligned_samples) == 0:
        return out
    correct = [[aligned[j][2][i] for j in range(n_tasks)] for i in range(n_tasks)]
    out.metrics = continual_metrics_with_intervals(correct, [flags for _, flags, _ in aligned],
                                                   n_resamples=run.n_resamples, confidence=1.0 - run.alpha, seed=0)
    out.accuracy_matrix = [list(row) for row in out.metrics.accuracy_matrix]
    return out


def _step_summary(step: StepRecords) -> StepSummary:
    train = step.train or {}
    plan = train.get("plan") or {}
    after = step.after_training or {}
    return StepSummary(
        index=step.index, done=step.done, folder=step.folder.name,
        method=plan.get("method"), lr=step.lr if step.lr is not None else plan.get("lr"),
        regularizer=(plan.get("regularizer") or {}).get("name"),
        trainable_parameters=train.get("trainable_parameters"), total_parameters=train.get("total_parameters"),
        optimizer_steps=train.get("global_step"), final_loss=train.get("final_loss"), seconds=train.get("seconds"),
        changed_fraction=after.get("changed_fraction"),
    )


# --------------------------------------------------------------------------------------------------- probe


def _pooled_pairs(a: dict[Any, bool], b: dict[Any, bool]) -> list[int]:
    """a - b per sample id judged in both (1: correct in a only, -1: in b only)."""
    return [int(a[i]) - int(b[i]) for i in a if i in b]


@dataclass
class StepForgetting:
    """After a step, on the earlier tasks j < step (samples pooled, each paired with itself): ``forgetting``, the
    mean of (correct after training task j) - (correct after the step), the per-sample forgetting of the continual
    literature measured at this step, on ``n`` samples; ``drop_from_base``, the mean of (correct for the base
    model) - (correct after the step), what the probe's KL from the base model compares with most directly, on
    ``n_base`` samples."""

    forgetting: float | None
    n: int
    drop_from_base: float | None
    n_base: int


def step_forgetting(run: ContinualRun, arm: StrategyRecords, step: int) -> StepForgetting:
    """The forgetting on the earlier tasks after ``step`` (:class:`StepForgetting`)."""
    own: list[int] = []
    base: list[int] = []
    for j in range(step):
        name = run.tasks[j].dataset
        now = correct_by_id(arm.steps[step].records.get(name, []))
        own += _pooled_pairs(correct_by_id(arm.steps[j].records.get(name, [])), now)
        base += _pooled_pairs(correct_by_id(run.base.get(name, [])), now)
    n_own, n_base = len(own), len(base)
    return StepForgetting(sum(own) / n_own if n_own else None, n_own, sum(base) / n_base if n_base else None, n_base)


def probe_summary(run: ContinualRun) -> ProbeSummary | None:
    """The judge-free probe after every step of every strategy, and how well its KL on the earlier tasks ranks the
    forgetting measured there (Spearman's rho over (strategy, step) points with at least one earlier task)."""
    if run.base_probe is None and not any(s.probe for a in run.strategies for s in a.steps):
        return None
    names = [t.dataset for t in run.tasks]
    curves: dict[str, list[ProbePoint]] = {}
    points: list[ForgettingPoint] = []
    for arm in run.strategies:
        curve = []
        for step in arm.steps:
            if step.probe is None or not step.done:
                continue
            row = step.probe
            earlier = names[: step.index]
            point = ProbePoint(arm.name, step.index, (row.get("kl") or {}).get("value"),
                               probe_mean(row, earlier) if earlier else None,
                               {t.label: probe_mean(row, [t.dataset]) for t in run.tasks}, row.get("label_mass"))
            curve.append(point)
            if earlier and all(arm.steps[j].done for j in range(step.index)) and run.base_done:
                points.append(ForgettingPoint(**asdict(point), **asdict(step_forgetting(run, arm, step.index))))
        curves[arm.name] = curve
    kept = [p for p in points if p.kl_earlier is not None]
    rows = [p.to_dict() for p in kept]
    return ProbeSummary((run.base_probe or {}).get("label_set"), curves, kept,
                        rank_correlation(rows, "kl_earlier", "forgetting", PROBE_UNIT),
                        rank_correlation(rows, "kl_earlier", "drop_from_base", PROBE_UNIT))


def _notes(run: ContinualRun) -> list[str]:
    notes = []
    if not run.base_done:
        notes.append("The base evaluation is not finished (base/DONE missing): forward transfer and every "
                     "metric wait for it.")
    for arm in run.strategies:
        missing = [s.index for s in arm.steps if not s.done]
        if missing:
            notes.append(f"{arm.name}: steps {missing} not finished (no DONE); its metrics wait for them.")
    return notes
