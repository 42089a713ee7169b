"""An EMT run folder read back (layout in :mod:`unforget.studies.emt.run`): the config's facts, every arm's judged
records by epoch and dataset, and the side files (alignment, probe, language, training log). Also the pairing of
records that every comparison of the summary and the claims uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...config import read_yaml
from ...errors import DataError
from ...reports.language import LANGUAGE_FILE
from ...reports.names import display_names
from ...runs import read_json, read_jsonl
from ...training.methods.base import METHODS, FinetuneMethod
from .config import arm_folder_name
from ...runs.layout import ALIGNMENT_FILE, CONFIG, DONE, METRICS, PROBE_FILE, SAMPLES, TRAIN_LOG
from ...runs.records import judged

Record = dict[str, Any]  # one line of a samples.jsonl (or alignment, probe, language .jsonl), as written
ByDataset = dict[str, list[Record]]


@dataclass
class Arm:
    """One fine-tuning arm as found on disk. ``epochs[e][dataset]`` lists its records; epoch 0 is the base model.
    ``finetune_method``: the registered method its config names (None for a name no longer registered)."""

    name: str
    method: str
    seed: int
    folder: Path
    done: bool
    finetune_method: FinetuneMethod | None = None
    epochs: dict[int, ByDataset] = field(default_factory=dict)
    partial_epochs: list[int] = field(default_factory=list)  # in samples.jsonl but not finished
    alignment: list[Record] = field(default_factory=list)
    train_log: list[Record] = field(default_factory=list)
    train_result: dict[str, Any] | None = None  # train_result.json as the trainer wrote it
    metrics: dict[str, Any] | None = None  # the arm's metrics.json: which epochs finished, the evaluator's figures
    probe: list[Record] = field(default_factory=list)  # probe.jsonl rows of finished epochs
    language: list[Record] = field(default_factory=list)  # language.jsonl rows of finished epochs

    @property
    def label(self) -> str:
        return self.folder.name

    @property
    def last_epoch(self) -> int:
        return max(self.epochs)

    def tuned_epochs(self) -> list[int]:
        return sorted(e for e in self.epochs if e > 0)


@dataclass
class EvalFacts:
    """The evaluation settings the report states (from the config's ``eval:``)."""

    split: str | None = None
    mode: str | None = None
    limit: int | None = None
    judges: list[str] | None = None
    template: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "mode": self.mode, "limit": self.limit, "judges": self.judges,
                "template": self.template}


@dataclass
class EmtRun:
    path: Path
    name: str
    model: str | None
    eval: EvalFacts
    configured_arms: list[str]  # the arm names under the config's `methods:`
    fine_tuning_set: str
    datasets: list[str]
    alpha: float
    seeds: list[int]
    classes: list[int] | None
    base: ByDataset
    base_done: bool
    base_metrics: dict[str, Any]  # base/metrics.json as the evaluator wrote it (encoder baselines, per-class figures)
    base_alignment: list[Record]
    arms: list[Arm]
    base_probe: list[Record] = field(default_factory=list)
    base_language: list[Record] = field(default_factory=list)

    @property
    def other_datasets(self) -> list[str]:
        return [d for d in self.datasets if d != self.fine_tuning_set]

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label in sentences and on the page
        (:func:`unforget.reports.names.display_names`)."""
        return display_names([*self.datasets, self.fine_tuning_set])

    def listed(self, datasets: Sequence[str]) -> str:
        return ", ".join(self.names[d] for d in datasets)

    def who(self, arm: Arm) -> str:
        """The arm in a sentence: its name, and its seed when the study has several."""
        return arm.name if len(self.seeds) == 1 else f"{arm.name}, seed {arm.seed}"


def read_emt_run(run_dir: str | Path) -> EmtRun:
    path = Path(run_dir)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise DataError(f"{path} has no config.yaml: it is not an EMT run folder (run `unforget study emt` first)")
    cfg = read_yaml(config_path)
    train = cfg.get("train") or {}
    evaluation = cfg.get("eval") or {}
    ft = str(train.get("dataset", "digits"))
    seeds = [int(s) for s in (cfg.get("seeds") or [0])]
    methods = cfg.get("methods") or []
    if not methods:
        raise DataError(f"{config_path}: no `methods:` listed, so there is no fine-tuning arm to report")
    base_records = [r for r in read_jsonl(path / "base" / SAMPLES) if r.get("epoch", 0) == 0]
    if not base_records:
        raise DataError(f"{path / 'base' / SAMPLES} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study emt` on this config to finish it")
    base_metrics_path = path / "base" / METRICS
    base_metrics = read_json(base_metrics_path) if base_metrics_path.exists() else {}
    datasets = list(dict.fromkeys([*(evaluation.get("datasets") or []), *(r["dataset"] for r in base_records)]))
    base = by_dataset(base_records)
    arms = []
    for seed in seeds:
        for spec in methods:
            folder = path / arm_folder_name(str(spec["name"]), seed, seeds)
            if folder.is_dir():
                arms.append(_read_arm(folder, str(spec["name"]), str(spec.get("method", spec["name"])), seed, base))
    classes = train.get("classes")
    return EmtRun(path=path, name=cfg.get("name", path.name), model=(cfg.get("model") or {}).get("name"),
                  eval=EvalFacts(**{k: evaluation.get(k) for k in ("split", "mode", "limit", "judges", "template")}),
                  configured_arms=[spec["name"] for spec in methods], fine_tuning_set=ft, datasets=datasets,
                  alpha=float(cfg.get("alpha", 0.05)), seeds=seeds,
                  classes=[int(c) for c in classes] if classes else None, base=base,
                  base_done=(path / "base" / DONE).exists(), base_metrics=base_metrics,
                  base_alignment=read_jsonl(path / "base" / ALIGNMENT_FILE), arms=arms,
                  base_probe=[r for r in read_jsonl(path / "base" / PROBE_FILE) if r.get("epoch", 0) == 0],
                  base_language=[r for r in read_jsonl(path / "base" / LANGUAGE_FILE) if r.get("epoch", 0) == 0])


def _read_arm(folder: Path, name: str, method: str, seed: int, base: ByDataset) -> Arm:
    records = [r for r in read_jsonl(folder / SAMPLES) if r.get("seed", seed) == seed]
    by_epoch: dict[int, list[Record]] = {}
    for r in records:
        by_epoch.setdefault(int(r.get("epoch", -1)), []).append(r)
    metrics_path = folder / METRICS
    metrics = read_json(metrics_path) if metrics_path.exists() else None
    # metrics.json gains an epoch only once that epoch's evaluation finished: it says which epochs are complete
    finished = {int(e) for e in (metrics or {}).get("epochs", {})} if metrics else set(by_epoch)
    arm = Arm(name=name, method=method, seed=seed, folder=folder, done=(folder / DONE).exists(),
              finetune_method=METHODS.get(method) if method in METHODS else None, metrics=metrics)
    arm.epochs[0] = base
    for epoch in sorted(by_epoch):
        if epoch <= 0:
            continue
        if epoch in finished:
            arm.epochs[epoch] = by_dataset(by_epoch[epoch])
        else:
            arm.partial_epochs.append(epoch)
    arm.alignment = read_jsonl(folder / ALIGNMENT_FILE)
    arm.probe = [r for r in read_jsonl(folder / PROBE_FILE)
                 if r.get("seed", seed) == seed and int(r.get("epoch", -1)) in arm.epochs]
    arm.language = [r for r in read_jsonl(folder / LANGUAGE_FILE)
                    if r.get("seed", seed) == seed and int(r.get("epoch", -1)) in arm.epochs]
    arm.train_log = read_jsonl(folder / "train" / TRAIN_LOG)
    result_path = folder / "train_result.json"
    arm.train_result = read_json(result_path) if result_path.exists() else None
    return arm


def by_dataset(records: Sequence[Record]) -> ByDataset:
    out: ByDataset = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


# ------------------------------------------------------------------------------------------------- pairing



def paired_flags(before: Sequence[Record], after: Sequence[Record],
                 key: str = "correct", fine_tuning_set: str | None = None) -> tuple[list[bool], list[bool]]:
    """Per-sample flags of the samples judged in both lists, matched by (dataset, id), in ``before``'s order.
    ``key`` "correct" pairs correctness; "leak" pairs whether the answer named a ``fine_tuning_set`` label."""
    after_by_id = {(r["dataset"], r["id"]): r for r in judged(after)}
    a, b = [], []
    for r in judged(before):
        other = after_by_id.get((r["dataset"], r["id"]))
        if other is None:
            continue
        a.append(_flag(r, key, fine_tuning_set))
        b.append(_flag(other, key, fine_tuning_set))
    return a, b


def _flag(record: Record, key: str, fine_tuning_set: str | None) -> bool:
    if key == "leak":
        return bool((record.get("leaks") or {}).get(fine_tuning_set))
    return bool(record[key])


def pooled(per_dataset: ByDataset, datasets: Sequence[str]) -> list[Record]:
    return [r for d in datasets for r in per_dataset.get(d, [])]


def is_text_set(run: EmtRun, dataset: str) -> bool:
    """Whether the base evaluation's records of ``dataset`` are plain-text questions (task "text")."""
    return any(r.get("task") == "text" for r in run.base.get(dataset, []))
