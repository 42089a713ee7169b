"""The continual study's summary (metrics.json) and report, computed from its run folder only.

Inputs (layout in :mod:`unforget.studies.continual`): ``config.yaml`` (tasks in order, strategies);
``base/samples.jsonl`` and ``base/metrics.json`` (the tasks' record names); per strategy and task index
``<strategy>/step-<i>-<task>/`` with ``samples.jsonl`` (every task evaluated after training task i), ``DONE``,
``train_result.json`` and a strategy's after-training summary (``model-tailor.json``).

- ``R[i][j]`` is the accuracy on task j's test samples after step i, ``b[j]`` the base model's; each cell carries a
  Wilson interval at ``1 - alpha``.
- ACC, mean accuracy over time, BWT, FWT and forgetting (:mod:`unforget.studies.continual_metrics`) carry
  bootstrap intervals over each task's test samples (the same samples resampled at every step). They use the
  samples judged in every evaluation of the strategy (base included), so that every figure is paired.
- The claim "strategy S forgets less than naive sequential fine-tuning" is checked per strategy on the samples of
  the earlier tasks, paired: per sample, forgetting is ``correct after its own task - correct after the last``
  (its mean is -BWT); the two strategies' values are compared with a paired bootstrap test (`stats.check_claim`).

``summarise_continual(run_dir)`` returns the JSON-ready summary; ``write_continual_report(run_dir)`` writes it as
``metrics.json`` with ``report.html``, ``report.md`` and ``plots/*.png`` (the page: :mod:`.continual_page`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..config import read_yaml
from ..errors import DataError
from ..runs import atomic_write_json, read_json, read_jsonl
from ..stats import check_claim, mcnemar_exact, paired_bootstrap_test, wilson_interval
from ..studies.continual_metrics import continual_metrics_with_intervals
from .base import REPORTS, ReportKind
from .document import ReportFiles
from .emt import judged
from .names import display_names
from .probe import probe_mean, probe_row, rank_correlation

log = logging.getLogger(__name__)

BASE_DIR = "base"
WEIGHTS_FILE = "weights.safetensors"
# strategies whose claim is the paper's: few-parameter / low-lr training and data-hybrid training forget less
PAPER_STRATEGIES = ("regularised", "replay")


def step_folder_name(index: int, ref: str) -> str:
    """``step-<i>-<task>``: the folder of task ``index`` (the dataset reference made into a file name)."""
    return f"step-{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', ref).strip('-.') or 'task'}"


def task_labels(refs: Sequence[str]) -> list[str]:
    """Each task's label in tables and plots (:func:`.names.display_names`: ``jsonl:/data/vqa.jsonl`` ->
    ``vqa.jsonl``, two folders of one name -> ``a/mnist``, ``b/mnist``)."""
    names = display_names(refs)
    return [names[ref] for ref in refs]


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class StepRecords:
    index: int
    folder: Path
    done: bool
    records: dict[str, list[dict[str, Any]]]  # record dataset name -> records
    train: dict[str, Any] | None = None
    after_training: dict[str, Any] | None = None
    lr: float | None = None  # the learning rate the fine-tuning used (the method's default resolved)
    probe: dict[str, Any] | None = None  # its probe.jsonl row (the judge-free probe after this step)


@dataclass
class StrategyRecords:
    name: str
    strategy: str
    options: dict[str, Any]
    steps: list[StepRecords] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.steps) and all(s.done for s in self.steps)


@dataclass
class ContinualRun:
    path: Path
    config: dict[str, Any]
    tasks: list[dict[str, Any]]  # index, ref, dataset (the records' name)
    alpha: float
    n_resamples: int
    base_done: bool
    base: dict[str, list[dict[str, Any]]]
    strategies: list[StrategyRecords]
    base_probe: dict[str, Any] | None = None


def _by_dataset(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


def _read_optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def read_continual_run(run_dir: str | Path) -> ContinualRun:
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise DataError(f"{path} has no config.yaml: it is not a continual run folder (run `unforget study "
                        "continual` first)")
    cfg = read_yaml(path / "config.yaml")
    refs = [str(t) for t in cfg.get("tasks") or []]
    if not refs:
        raise DataError(f"{path / 'config.yaml'} lists no tasks: not a continual study's config")
    base_dir = path / BASE_DIR
    base_metrics = _read_optional(base_dir / "metrics.json") or {}
    names = {t["index"]: t["dataset"] for t in base_metrics.get("tasks") or []}
    tasks = [{"index": i, "ref": ref, "label": label, "dataset": names.get(i, ref)}
             for i, (ref, label) in enumerate(zip(refs, task_labels(refs)))]
    strategies = []
    for arm in cfg.get("strategies") or []:
        sr = StrategyRecords(str(arm["name"]), str(arm["strategy"]), dict(arm.get("options") or {}))
        for i, ref in enumerate(refs):
            folder = path / sr.name / step_folder_name(i, ref)
            train_metrics = _read_optional(folder / "train" / "metrics.json") or {}
            sr.steps.append(StepRecords(
                i, folder, (folder / "DONE").is_file(), _by_dataset(read_jsonl(folder / "samples.jsonl")),
                _read_optional(folder / "train_result.json"), _read_optional(folder / f"{sr.strategy}.json"),
                (train_metrics.get("config") or {}).get("lr"), probe_row(folder, step=i)))
        strategies.append(sr)
    return ContinualRun(path, cfg, tasks, float(cfg.get("alpha", 0.05)), int(cfg.get("n_resamples", 2000)),
                        (base_dir / "DONE").is_file(), _by_dataset(read_jsonl(base_dir / "samples.jsonl")),
                        strategies, probe_row(base_dir, step=-1))


# ---------------------------------------------------------------------------------------------- per sample


def _correct_by_id(records: Sequence[dict[str, Any]]) -> dict[Any, bool]:
    return {r["id"]: bool(r["correct"]) for r in judged(records)}


def aligned_task_flags(run: ContinualRun, arm: StrategyRecords, task: int) -> tuple[list[Any], list[bool],
                                                                                     list[list[bool]]]:
    """(sample ids, base flags, flags after each step) on task ``task``'s samples judged in all of these
    evaluations, in the base records' order."""
    name = run.tasks[task]["dataset"]
    base = _correct_by_id(run.base.get(name, []))
    steps = [_correct_by_id(s.records.get(name, [])) for s in arm.steps]
    ids = [i for i in base if all(i in s for s in steps)]
    return ids, [base[i] for i in ids], [[s[i] for i in ids] for s in steps]


def _cell_estimate(records: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any] | None:
    kept = judged(records)
    if not kept:
        return None
    return wilson_interval(sum(bool(r["correct"]) for r in kept), len(kept), 1.0 - alpha).to_dict()


# ------------------------------------------------------------------------------------------------- summary


def summarise_continual(run_dir: str | Path) -> dict[str, Any]:
    run = read_continual_run(run_dir)
    cfg = run.config
    names = [t["dataset"] for t in run.tasks]
    ev = cfg.get("eval") or {}
    summary: dict[str, Any] = {
        "kind": "continual",
        "unforget_version": __version__,
        "name": cfg.get("name"),
        "run_dir": str(run.path),
        "model": (cfg.get("model") or {}).get("name"),
        "tasks": run.tasks,
        "train": cfg.get("train") or {},
        "eval": {k: ev.get(k) for k in ("split", "mode", "limit", "judges")},
        "alpha": run.alpha,
        "confidence": 1.0 - run.alpha,
        "n_resamples": run.n_resamples,
        "base_done": run.base_done,
        "base_accuracy": [_cell_estimate(run.base.get(n, []), run.alpha) for n in names],
        "strategies": [_summarise_strategy(run, arm) for arm in run.strategies],
    }
    summary["claims"] = _claims(run)
    summary["probe"] = probe_summary(run)
    summary["notes"] = _notes(run)
    return summary


PROBE_UNIT = "(strategy, step)"


def _pooled_pairs(a: dict[Any, bool], b: dict[Any, bool]) -> list[int]:
    """a - b per sample id judged in both (1: correct in a only, -1: in b only)."""
    return [int(a[i]) - int(b[i]) for i in a if i in b]


def step_forgetting(run: ContinualRun, arm: StrategyRecords, step: int) -> dict[str, Any]:
    """After ``step``, on the earlier tasks j < step (samples pooled, each paired with itself):

    - ``forgetting``: mean of (correct after training task j) - (correct after ``step``), the per-sample forgetting
      of the continual literature measured at this step;
    - ``drop_from_base``: mean of (correct for the base model) - (correct after ``step``), what the probe's KL from
      the base model compares with most directly.
    """
    own: list[int] = []
    base: list[int] = []
    for j in range(step):
        name = run.tasks[j]["dataset"]
        now = _correct_by_id(arm.steps[step].records.get(name, []))
        own += _pooled_pairs(_correct_by_id(arm.steps[j].records.get(name, [])), now)
        base += _pooled_pairs(_correct_by_id(run.base.get(name, [])), now)
    n_own, n_base = len(own), len(base)
    return {"forgetting": sum(own) / n_own if n_own else None, "n": n_own,
            "drop_from_base": sum(base) / n_base if n_base else None, "n_base": n_base}


def probe_summary(run: ContinualRun) -> dict[str, Any] | None:
    """The judge-free probe after every step of every strategy, and how well its KL on the earlier tasks ranks the
    forgetting measured there (Spearman's rho over (strategy, step) points with at least one earlier task)."""
    if run.base_probe is None and not any(s.probe for a in run.strategies for s in a.steps):
        return None
    names = [t["dataset"] for t in run.tasks]
    curves: dict[str, list[dict[str, Any]]] = {}
    points: list[dict[str, Any]] = []
    for arm in run.strategies:
        curve = []
        for step in arm.steps:
            if step.probe is None or not step.done:
                continue
            row = step.probe
            earlier = names[: step.index]
            point = {"strategy": arm.name, "step": step.index, "kl": (row.get("kl") or {}).get("value"),
                     "kl_earlier": probe_mean(row, earlier) if earlier else None,
                     "kl_by_task": {t["label"]: probe_mean(row, [t["dataset"]]) for t in run.tasks},
                     "label_mass": row.get("label_mass")}
            curve.append(point)
            if earlier and all(arm.steps[j].done for j in range(step.index)) and run.base_done:
                points.append({**point, **step_forgetting(run, arm, step.index)})
        curves[arm.name] = curve
    kept = [p for p in points if p["kl_earlier"] is not None]
    return {"label_set": (run.base_probe or {}).get("label_set"), "curves": curves, "points": kept,
            "correlation": {"forgetting": rank_correlation(kept, "kl_earlier", "forgetting", PROBE_UNIT),
                            "drop_from_base": rank_correlation(kept, "kl_earlier", "drop_from_base", PROBE_UNIT)}}


def _summarise_strategy(run: ContinualRun, arm: StrategyRecords) -> dict[str, Any]:
    n_tasks = len(run.tasks)
    matrix = [[_cell_estimate(step.records.get(t["dataset"], []), run.alpha) if step.done else None
               for t in run.tasks] for step in arm.steps]
    out: dict[str, Any] = {
        "name": arm.name, "strategy": arm.strategy, "options": arm.options, "done": arm.complete,
        "steps_done": [s.index for s in arm.steps if s.done], "accuracy_matrix": matrix, "metrics": None,
        "aligned_samples": None, "steps": [_step_summary(s) for s in arm.steps],
    }
    if not (arm.complete and run.base_done):
        return out
    aligned = [aligned_task_flags(run, arm, j) for j in range(n_tasks)]
    sizes = [len(ids) for ids, _, _ in aligned]
    out["aligned_samples"] = sizes
    if min(sizes) == 0:
        return out
    correct = [[aligned[j][2][i] for j in range(n_tasks)] for i in range(n_tasks)]
    estimates = continual_metrics_with_intervals(correct, [flags for _, flags, _ in aligned],
                                                 n_resamples=run.n_resamples, confidence=1.0 - run.alpha, seed=0)
    out["metrics"] = estimates.to_dict()
    out["accuracy_matrix"] = out["metrics"]["accuracy_matrix"]
    return out


def _step_summary(step: StepRecords) -> dict[str, Any]:
    train = step.train or {}
    plan = train.get("plan") or {}
    after = step.after_training or {}
    return {
        "index": step.index, "done": step.done, "folder": step.folder.name,
        "method": plan.get("method"), "lr": step.lr if step.lr is not None else plan.get("lr"),
        "regularizer": (plan.get("regularizer") or {}).get("name"),
        "trainable_parameters": train.get("trainable_parameters"), "total_parameters": train.get("total_parameters"),
        "optimizer_steps": train.get("global_step"), "final_loss": train.get("final_loss"),
        "seconds": train.get("seconds"),
        "changed_fraction": after.get("changed_fraction"),
    }


# ------------------------------------------------------------------------------------------------- claims


def _not_shown(claim: str, why: str, arm: str, **extra: Any) -> dict[str, Any]:
    return {"id": "forgets-less-than-naive", "arm": arm, "claim": claim, "held": None, "verdict": "not shown",
            "evidence": why, "test": None, "needed_n": None, "details": [], **extra}


def per_sample_forgetting(run: ContinualRun, arm: StrategyRecords, task: int) -> dict[Any, int]:
    """Sample id -> correct after training ``task`` minus correct after the last task (1 forgotten, -1 learnt
    later, 0 unchanged), on the samples judged in both."""
    name = run.tasks[task]["dataset"]
    own = _correct_by_id(arm.steps[task].records.get(name, []))
    last = _correct_by_id(arm.steps[-1].records.get(name, []))
    return {i: int(own[i]) - int(last[i]) for i in own if i in last}


def _claims(run: ContinualRun) -> list[dict[str, Any]]:
    naive = next((a for a in run.strategies if a.strategy == "naive"), None)
    out = []
    for arm in run.strategies:
        if arm is naive:
            continue
        claim = (f"{arm.name} forgets less than naive sequential fine-tuning"
                 f"{f' ({naive.name})' if naive else ''}: lower per-sample forgetting (correct after its own task "
                 "minus correct after the last) on the earlier tasks")
        extra = {"paper_claim": arm.strategy in PAPER_STRATEGIES, "strategy": arm.strategy}
        if naive is None:
            out.append(_not_shown(claim, "the study has no naive strategy to compare with", arm.name, **extra))
            continue
        if len(run.tasks) < 2:
            out.append(_not_shown(claim, "forgetting needs at least two tasks", arm.name, **extra))
            continue
        if not (arm.complete and naive.complete):
            out.append(_not_shown(claim, "a strategy has not finished every task yet", arm.name, **extra))
            continue
        out.append(_claim_forgets_less(run, arm, naive, claim, extra))
    return out


def _claim_forgets_less(run: ContinualRun, arm: StrategyRecords, naive: StrategyRecords, claim: str,
                        extra: dict[str, Any]) -> dict[str, Any]:
    earlier = range(len(run.tasks) - 1)
    ours, theirs, details = [], [], []
    final_ours, final_theirs = [], []
    for j in earlier:
        f_arm, f_naive = per_sample_forgetting(run, arm, j), per_sample_forgetting(run, naive, j)
        ids = [i for i in f_naive if i in f_arm]
        ours += [f_arm[i] for i in ids]
        theirs += [f_naive[i] for i in ids]
        if ids:
            details.append(f"{run.tasks[j]['label']}: mean forgetting {naive.name} {sum(f_naive[i] for i in ids) / len(ids):.3f}"
                           f", {arm.name} {sum(f_arm[i] for i in ids) / len(ids):.3f} (n={len(ids)})")
        name = run.tasks[j]["dataset"]
        last_arm = _correct_by_id(arm.steps[-1].records.get(name, []))
        last_naive = _correct_by_id(naive.steps[-1].records.get(name, []))
        shared = [i for i in last_naive if i in last_arm]
        final_theirs += [last_naive[i] for i in shared]
        final_ours += [last_arm[i] for i in shared]
    if len(ours) < 2:
        return _not_shown(claim, "fewer than two samples were judged in every evaluation compared", arm.name, **extra)
    test = replace(paired_bootstrap_test(theirs, ours, alpha=run.alpha, n_resamples=run.n_resamples, seed=0),
                   delta_of=f"{arm.name} - {naive.name}")
    check = check_claim(claim, test, "negative", subject="mean per-sample forgetting on the earlier tasks")
    if final_ours:
        final = mcnemar_exact(final_theirs, final_ours, alpha=run.alpha)
        details.append(f"accuracy on the earlier tasks after the last task: {naive.name} {final.before}, "
                       f"{arm.name} {final.after} (difference {final.delta.format(3)}, exact McNemar "
                       f"p={final.p_value:.2g}, n={len(final_ours)})")
    return {"id": "forgets-less-than-naive", "arm": arm.name, **check.to_dict(), "details": details,
            "compared_with": naive.name, **extra}


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


# ------------------------------------------------------------------------------------------------- writing


def write_continual_report(run_dir: str | Path) -> ReportFiles:
    """Summarise the run folder and write ``metrics.json``, ``report.html``, ``report.md`` and ``plots/``."""
    from .continual_page import build_continual_report
    from .document import write_report

    run_dir = Path(run_dir)
    summary = summarise_continual(run_dir)
    atomic_write_json(run_dir / "metrics.json", summary)
    files = write_report(build_continual_report(summary), run_dir)
    log.info("continual report: %s", files.html)
    return files


def is_continual_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return {"tasks", "strategies"} <= set(config) and (run_dir / BASE_DIR).is_dir()


REPORTS.register("continual", ReportKind("continual", write_continual_report, is_continual_run,
                                         "continual learning: accuracy matrices, ACC/BWT/FWT/forgetting, claims"),
                 description="continual study: accuracy matrices R, ACC/BWT/FWT/forgetting, strategy claims")
