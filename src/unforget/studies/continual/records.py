"""The continual study's run folder read back: the config it ran, the base model's and every step's per-sample
records, each step's training record; and the per-sample pairings the summary and the claims are built on.

Inputs (layout in :mod:`unforget.studies.continual.run`): ``config.yaml`` (tasks in order, strategies);
``base/samples.jsonl`` and ``base/metrics.json`` (the tasks' record names); per strategy and task index
``<strategy>/step-<i>-<task>/`` with ``samples.jsonl`` (every task evaluated after training task i), ``DONE``,
``train_result.json``, ``train/metrics.json`` and a strategy's after-training summary (``model-tailor.json``), and
the probe rows (``probe.jsonl``) where the probe ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...config import read_yaml
from ...errors import DataError
from ...reports.names import display_names
from ..probing import probe_row
from ...runs import read_json, read_jsonl
from .layout import BASE_DIR, step_folder_name
from ...runs.layout import CONFIG, DONE, METRICS, SAMPLES
from ...runs.records import judged

Record = dict[str, Any]  # one line of a samples.jsonl, as written (the evaluator's fields and the study's tags)


def task_labels(refs: Sequence[str]) -> list[str]:
    """Each task's label in tables and plots (:func:`unforget.reports.names.display_names`:
    ``jsonl:/data/vqa.jsonl`` -> ``vqa.jsonl``, two folders of one name -> ``a/mnist``, ``b/mnist``)."""
    names = display_names(refs)
    return [names[ref] for ref in refs]


@dataclass
class Task:
    """Task ``index`` of the sequence: its dataset reference, its label on the page, the name its records carry."""

    index: int
    ref: str
    label: str
    dataset: str


@dataclass
class StepRecords:
    index: int
    folder: Path
    done: bool
    records: dict[str, list[Record]]  # record dataset name -> records
    train: dict[str, Any] | None = None  # train_result.json: the fine-tuning's result and the strategy's plan
    after_training: dict[str, Any] | None = None  # the strategy's after-training summary (model-tailor.json)
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
    config: dict[str, Any]  # config.yaml as written (the summary states some of its settings)
    tasks: list[Task]
    alpha: float
    n_resamples: int
    base_done: bool
    base: dict[str, list[Record]]
    strategies: list[StrategyRecords]
    base_probe: dict[str, Any] | None = None


def _by_dataset(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


def _read_optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def read_continual_run(run_dir: str | Path) -> ContinualRun:
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise DataError(f"{path} has no config.yaml: it is not a continual run folder (run `unforget study "
                        "continual` first)")
    cfg = read_yaml(path / CONFIG)
    refs = [str(t) for t in cfg.get("tasks") or []]
    if not refs:
        raise DataError(f"{path / CONFIG} lists no tasks: not a continual study's config")
    base_dir = path / BASE_DIR
    base_metrics = _read_optional(base_dir / METRICS) or {}
    names = {t["index"]: t["dataset"] for t in base_metrics.get("tasks") or []}
    tasks = [Task(i, ref, label, names.get(i, ref)) for i, (ref, label) in enumerate(zip(refs, task_labels(refs)))]
    strategies = []
    for arm in cfg.get("strategies") or []:
        sr = StrategyRecords(str(arm["name"]), str(arm["strategy"]), dict(arm.get("options") or {}))
        for i, ref in enumerate(refs):
            folder = path / sr.name / step_folder_name(i, ref)
            train_metrics = _read_optional(folder / "train" / METRICS) or {}
            sr.steps.append(StepRecords(
                i, folder, (folder / DONE).is_file(), _by_dataset(read_jsonl(folder / SAMPLES)),
                _read_optional(folder / "train_result.json"), _read_optional(folder / f"{sr.strategy}.json"),
                (train_metrics.get("config") or {}).get("lr"), probe_row(folder, step=i)))
        strategies.append(sr)
    return ContinualRun(path, cfg, tasks, float(cfg.get("alpha", 0.05)), int(cfg.get("n_resamples", 2000)),
                        (base_dir / DONE).is_file(), _by_dataset(read_jsonl(base_dir / SAMPLES)),
                        strategies, probe_row(base_dir, step=-1))


# ---------------------------------------------------------------------------------------------- per sample



def correct_by_id(records: Sequence[Record]) -> dict[Any, bool]:
    """Sample id -> correct, on the judged records."""
    return {r["id"]: bool(r["correct"]) for r in judged(records)}


def aligned_task_flags(run: ContinualRun, arm: StrategyRecords, task: int) -> tuple[list[Any], list[bool],
                                                                                     list[list[bool]]]:
    """(sample ids, base flags, flags after each step) on task ``task``'s samples judged in all of these
    evaluations, in the base records' order."""
    name = run.tasks[task].dataset
    base = correct_by_id(run.base.get(name, []))
    steps = [correct_by_id(s.records.get(name, [])) for s in arm.steps]
    ids = [i for i in base if all(i in s for s in steps)]
    return ids, [base[i] for i in ids], [[s[i] for i in ids] for s in steps]


def per_sample_forgetting(run: ContinualRun, arm: StrategyRecords, task: int) -> dict[Any, int]:
    """Sample id -> correct after training ``task`` minus correct after the last task (1 forgotten, -1 learnt
    later, 0 unchanged), on the samples judged in both."""
    name = run.tasks[task].dataset
    own = correct_by_id(arm.steps[task].records.get(name, []))
    last = correct_by_id(arm.steps[-1].records.get(name, []))
    return {i: int(own[i]) - int(last[i]) for i in own if i in last}
