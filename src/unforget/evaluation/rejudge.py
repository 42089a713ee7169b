"""Judge again, without generating again: fill in the verdicts a run is missing.

An answer is judged again by a judge when its record has no verdict from that judge (a judge added to the run's
list) or the verdict failed (``correct`` None: the LLM endpoint was down, the reply was unparseable, the cascade's
last stage could not decide). Every other record is left exactly as it is, answers are never regenerated, and the
judges see the same :class:`JudgeItem` the evaluator built (:func:`evaluator.judge_item`). samples.jsonl is then
rewritten in one atomic rename; run it while no evaluation is appending to the same folder.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..data import ImageDataset, load_dataset
from ..errors import DataError, UnforgetError
from ..runs import RunDir
from .config import EvalConfig
from .evaluator import EvalResult, judge_item, score_records, verdict_fields
from .judges.base import JUDGES, Verdict

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


def _datasets_of(records: Sequence[dict[str, Any]], refs: Sequence[str]) -> dict[str, ImageDataset]:
    """Record dataset name -> dataset (class names and synonyms for the judges). ``refs``: the run's references
    (``format:path`` sets are named differently from their reference); other names are loaded as given."""
    out: dict[str, ImageDataset] = {}
    for ref in refs:
        ds = load_dataset(ref)
        out[ds.name] = ds
    for name in dict.fromkeys(r["dataset"] for r in records):
        if name not in out:
            try:
                out[name] = load_dataset(name)
            except (UnforgetError, KeyError) as exc:
                raise DataError(f"records of dataset '{name}' need its class names to be judged, but it cannot be "
                                f"loaded ({exc}); pass its reference with --datasets") from exc
    return out


def rejudge_records(records: list[dict[str, Any]], judges: Sequence[Any], datasets: dict[str, ImageDataset],
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
    stats = {j.name: j.stats() for j in judges if callable(getattr(j, "stats", None))}
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
    judges = [JUDGES.get(name)(**cfg.judge_options.get(name, {})) for name in cfg.judges]
    try:
        datasets = _datasets_of(records, cfg.datasets)
        result = rejudge_records(records, judges, datasets, progress)
    finally:
        for j in judges:
            close = getattr(j, "close", None)
            if callable(close):
                close()
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
