"""Judge again, without generating again: fill in the verdicts a run is missing.

An answer is judged again by a judge when its record has no verdict from that judge (a judge added to the run's
list) or the verdict failed (``correct`` None: the LLM endpoint was down, the reply was unparseable, the cascade's
last stage could not decide). Every other record is left exactly as it is, answers are never regenerated, and the
judges see the same :class:`JudgeItem` the evaluator built (:func:`evaluator.judge_item`). samples.jsonl is then
rewritten in one atomic rename; run it while no evaluation is appending to the same folder.

``rejudge_run`` works on an ``unforget eval`` run folder; ``rejudge_study`` on a study folder (EMT, 2x2, continual):
every evaluation folder under it (each folder holding a samples.jsonl) is rejudged, its metrics.json recomputed per
evaluation point (records tagged with an epoch or a step) and the study's summary and report written again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import read_yaml
from ..data import ImageDataset, load_dataset
from ..errors import DataError, UnforgetError
from ..runs import RunDir, read_jsonl
from .config import EvalConfig
from .evaluator import EvalResult, judge_item, score_records, verdict_fields
from .judges.base import Judge, Verdict, build_judges, judge_stats
from ..runs.layout import CONFIG, SAMPLES

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
CHUNK = 256  # answers per judge call: progress shows and an interrupted rejudge loses at most this much work


@dataclass
class RejudgeResult:
    """What a rejudge did: per judge, the answers sent to it and those it still could not judge."""

    records: int  # judged records in the file (skipped and caption records are never judged)
    touched: int  # records that received at least one new verdict
    changed: int  # records rewritten (touched, or decided by another first judge before)
    sent: dict[str, int] = field(default_factory=dict)
    still_unjudged: dict[str, int] = field(default_factory=dict)
    judge_stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "touched": self.touched, "changed": self.changed, "sent": self.sent,
                "still_unjudged": self.still_unjudged, "judge_stats": self.judge_stats}


def judgeable(record: dict[str, Any]) -> bool:
    return not record.get("skipped") and record.get("task") != "caption" and "answer" in record


def missing_verdicts(record: dict[str, Any], judge_names: Sequence[str]) -> list[str]:
    """The judges whose verdict ``record`` lacks or that failed to judge it (``correct`` None)."""
    if not judgeable(record):
        return []
    judgements = record.get("judgements") or {}
    return [name for name in judge_names if (judgements.get(name) or {}).get("correct") is None]


def count_unjudged(folder: str | Path) -> int:
    """Verdicts missing under ``folder``: over its samples.jsonl and every one below it (a study's evaluations), each
    judge's verdict with ``correct`` None on a record a judge should have judged. What ``--rejudge`` would ask for
    again; a resumed run's old failures count too (resuming skips judged-or-not records)."""
    return sum(1 for path in sorted(Path(folder).rglob(SAMPLES)) for record in read_jsonl(path)
               if judgeable(record)
               for verdict in (record.get("judgements") or {}).values()
               if isinstance(verdict, dict) and verdict.get("correct") is None)


def _datasets_of(records: Sequence[dict[str, Any]], refs: Sequence[str],
                 known: dict[str, ImageDataset] | None = None) -> dict[str, ImageDataset]:
    """Record dataset name -> dataset (class names and synonyms for the judges). ``refs``: the run's references
    (``format:path`` sets are named differently from their reference); other names are loaded as given. ``known``:
    datasets already loaded (a study's folders share them); it is extended in place."""
    out: dict[str, ImageDataset] = known if known is not None else {}
    for ref in refs:
        if ref not in out:
            ds = load_dataset(ref)
            out[ds.name] = out[ref] = ds
    for name in dict.fromkeys(r["dataset"] for r in records):
        if name not in out:
            try:
                out[name] = load_dataset(name)
            except (UnforgetError, KeyError) as exc:
                raise DataError(f"records of dataset '{name}' need its class names to be judged, but it cannot be "
                                f"loaded ({exc}); pass its reference with --datasets") from exc
    return out


def rejudge_records(records: list[dict[str, Any]], judges: Sequence[Judge], datasets: dict[str, ImageDataset],
                    progress: ProgressFn | None = None) -> RejudgeResult:
    """Fill in missing or failed verdicts in ``records`` (changed in place); the first judge decides."""
    names = [j.name for j in judges]
    todo = {name: [i for i, r in enumerate(records) if name in missing_verdicts(r, [name])] for name in names}
    new: dict[int, dict[str, Verdict]] = {}
    for judge in judges:
        idx = todo[judge.name]
        for start in range(0, len(idx), CHUNK):
            chunk = idx[start : start + CHUNK]
            items = [judge_item(datasets[records[i]["dataset"]], records[i].get("question") or "",
                                records[i]["answer"] or "", records[i]["reference"]) for i in chunk]
            for i, verdict in zip(chunk, judge.judge(items)):
                new.setdefault(i, {})[judge.name] = verdict
            if progress:
                progress(f"rejudge {judge.name}", start + len(chunk), len(idx))
    primary = names[0]
    changed = 0
    for i, record in enumerate(records):
        if not judgeable(record):
            continue
        if i not in new and (record.get("judge_identity") or {}).get("judge") == primary:
            continue  # nothing new and already decided by this judge: left exactly as it was
        verdicts = {name: Verdict(**v) for name, v in (record.get("judgements") or {}).items() if name in names}
        verdicts.update(new.get(i, {}))
        record.update(verdict_fields(judges, {name: verdicts[name] for name in names}))
        changed += 1
    stats = judge_stats(judges)
    still = Counter(name for r in records for name in missing_verdicts(r, names))
    return RejudgeResult(records=sum(judgeable(r) for r in records), touched=len(new), changed=changed,
                         sent={name: len(idx) for name, idx in todo.items()},
                         still_unjudged={name: still.get(name, 0) for name in names}, judge_stats=stats)


def rejudge_run(cfg: EvalConfig, run: RunDir, progress: ProgressFn | None = None) -> tuple[RejudgeResult, EvalResult]:
    """Rejudge ``run``'s samples.jsonl with ``cfg.judges`` and rewrite it; the metrics of ``cfg.datasets`` from the
    rewritten records (the caller writes metrics.json)."""
    records = run.samples()
    if not records:
        raise DataError(f"{run.samples_path} is missing or empty: there are no answers to judge again "
                        "(run `unforget eval` on this folder first)")
    judges = build_judges(cfg.judges, cfg.judge_options)
    try:
        datasets = _datasets_of(records, cfg.datasets)
        result = rejudge_records(records, judges, datasets, progress)
    finally:
        for j in judges:
            j.close()
    if result.changed:
        run.rewrite_samples(records)
    scored: dict[str, Any] = {}
    for ref in cfg.datasets:
        ds = load_dataset(ref)
        mine = [r for r in records if r["dataset"] == ds.name]
        if mine:
            scored[ref] = score_records(ds, mine, cfg.judges, cfg.leak_labels)
    log.info("rejudged %d of %d answers; still unjudged: %s", result.touched, result.records, result.still_unjudged)
    return result, EvalResult(scored, str(run.path), result.judge_stats)


# ------------------------------------------------------------------------------------------------ study folders

TAG_KEYS = ("epoch", "step")  # what the studies tag their records with: one evaluation point per value


@dataclass
class StudyRejudgeResult:
    folders: dict[str, RejudgeResult]  # evaluation folder (relative to the study) -> what its rejudge did

    def to_dict(self) -> dict[str, Any]:
        return {"folders": {k: v.to_dict() for k, v in self.folders.items()}}


def evaluation_folders(study: Path) -> list[Path]:
    """The folders under ``study`` that hold a samples.jsonl (base, arms, sweep and hybrid runs, task steps)."""
    return sorted(p.parent for p in study.rglob(SAMPLES) if p.parent != study)


def study_refs(config: dict[str, Any]) -> list[str]:
    """The dataset references a study evaluated: eval.datasets, the 2x2 cells, the continual tasks."""
    refs = [*((config.get("eval") or {}).get("datasets") or []), *((config.get("cells") or {}).values()),
            *(config.get("tasks") or [])]
    return [str(r) for r in dict.fromkeys(refs)]


def rejudge_study(study: str | Path, judges: Sequence[str] | None = None,
                  judge_options: dict[str, dict[str, Any]] | None = None,
                  progress: ProgressFn | None = None) -> StudyRejudgeResult:
    """Rejudge every evaluation folder of a study with ``judges`` (default: the study's eval.judges) and recompute
    each folder's metrics.json; the caller writes the study's summary and report again from the rewritten records
    (`unforget eval --rejudge` does)."""
    study = Path(study)
    if not (study / CONFIG).is_file():
        raise DataError(f"{study} has no config.yaml: not a study folder (`unforget study ...` writes one)")
    config = read_yaml(study / CONFIG)
    ev = config.get("eval") or {}
    names = list(judges or ev.get("judges") or EvalConfig().judges)
    options = {**(ev.get("judge_options") or {}), **(judge_options or {})}
    folders = evaluation_folders(study)
    if not folders:
        raise DataError(f"{study} holds no samples.jsonl under it: there are no answers to judge again "
                        "(run the study first)")
    built = build_judges(names, options)
    datasets: dict[str, ImageDataset] = {}
    refs = study_refs(config)
    done: dict[str, RejudgeResult] = {}
    try:
        for folder in folders:
            label = str(folder.relative_to(study))
            run = RunDir(folder)
            records = run.samples()
            _datasets_of(records, refs, datasets)
            step = (lambda what, k, n, label=label: progress(f"{label} {what}", k, n)) if progress else None
            result = rejudge_records(records, built, datasets, step)
            if result.changed:
                run.rewrite_samples(records)
            _rewrite_folder_metrics(run, records, names, datasets, refs, result)
            done[label] = result
    finally:
        for j in built:
            j.close()
    return StudyRejudgeResult(done)


def score_points(records: Sequence[dict[str, Any]], judge_names: Sequence[str], datasets: dict[str, ImageDataset],
                 refs: Sequence[str]) -> dict[Any, EvalResult]:
    """The metrics of each evaluation point (records grouped by their epoch or step tag; None: untagged), per
    dataset keyed by its reference as the evaluator keys them, leak rates for the leak sets the records carry."""
    tag = next((k for k in TAG_KEYS if any(k in r for r in records)), None)
    ref_of: dict[str, str] = {}
    for ref in refs:  # loaded already (_datasets_of): a dict lookup
        ref_of.setdefault(datasets[ref].name, ref)
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r.get(tag) if tag else None, []).append(r)
    out = {}
    for point, rows in groups.items():
        leak_names = sorted({k for r in rows for k in (r.get("leaks") or {})})
        scored = {}
        for name in dict.fromkeys(r["dataset"] for r in rows):
            mine = [r for r in rows if r["dataset"] == name]
            scored[ref_of.get(name, name)] = score_records(datasets[name], mine, judge_names, leak_names)
        out[point] = EvalResult(scored)
    return out


def _merged(old: dict[str, Any] | None, new: EvalResult) -> dict[str, Any]:
    """``old`` (an evaluation's figures) with the datasets' figures replaced by ``new``'s; the encoder baselines,
    timings and sampling of the evaluation that produced the answers are carried over, every other key of ``old``
    kept."""
    old = dict(old or {})
    old_sets = old.get("datasets") or {}
    doc = new.to_dict()
    for name, figures in doc["datasets"].items():
        for key in ("baselines", "seconds", "sampling"):
            if key in (old_sets.get(name) or {}):
                figures[key] = old_sets[name][key]
    old["datasets"] = {**old_sets, **doc["datasets"]}
    return old


def _rewrite_folder_metrics(run: RunDir, records: list[dict[str, Any]], judge_names: Sequence[str],
                            datasets: dict[str, ImageDataset], refs: Sequence[str], result: RejudgeResult) -> None:
    """metrics.json of one study evaluation folder, in the shape its study wrote it: per epoch (EMT arms), under
    ``eval`` (2x2 runs) or at the top (base folders, continual steps, with their ``accuracy`` map)."""
    points = score_points(records, judge_names, datasets, refs)
    metrics = run.read_metrics() or {}
    if isinstance(metrics.get("epochs"), dict):
        for key, figures in metrics["epochs"].items():
            point = next((p for p in points if str(p) == key), None)
            if point is not None:
                metrics["epochs"][key] = _merged(figures, points[point])
    elif len(points) == 1:
        (new,) = points.values()
        if isinstance(metrics.get("eval"), dict):
            metrics["eval"] = _merged(metrics["eval"], new)
        else:
            metrics = _merged(metrics, new)
            if isinstance(metrics.get("accuracy"), dict):
                metrics["accuracy"] = {name: r.metrics.accuracy for name, r in new.results.items()}
    else:
        raise DataError(f"{run.samples_path} holds several evaluation points ({sorted(map(str, points))}) but its "
                        "metrics.json has no per-epoch figures: not a folder a study wrote")
    metrics["rejudge"] = result.to_dict()
    run.write_metrics(metrics)
