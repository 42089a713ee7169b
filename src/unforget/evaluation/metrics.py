"""Classification metrics from judged records (pure functions over lists; unit-tested on hand-made cases)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..stats import Estimate, wilson_interval


@dataclass
class ClassificationMetrics:
    """Accuracy over judged samples; unjudged (judge failures) and skipped samples are counted apart."""

    n: int  # samples with a verdict
    accuracy: float | None  # None: no sample has a verdict (every judge call failed); the failures are in unjudged
    accuracy_low: float | None
    accuracy_high: float | None
    top_k: dict[str, float] = field(default_factory=dict)  # rank mode: "top3" -> accuracy
    per_class: dict[str, float] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # true -> predicted ("<none>") -> count
    no_class_rate: float = 0.0  # answers naming no class of the set
    outside_label_set_rate: float = 0.0  # = no_class_rate for classification; kept under EMT's name
    leak_rates: dict[str, float] = field(default_factory=dict)  # answers naming a label of another dataset
    top1_share: float = 0.0  # share of predictions on the most predicted class
    top3_share: float = 0.0
    prediction_entropy: float = 0.0  # bits; log2(num_classes) means uniform
    normalised_entropy: float = 0.0  # entropy / log2(num_classes)
    unjudged: int = 0
    skipped: int = 0
    # benchmark sets (a dataset metric, evaluation/scorers.py): ``accuracy`` is that metric's mean per-sample score
    # ("vqa": VQA accuracy, "exact", "pope") with the interval named in ``interval``; ``others`` holds the
    # benchmark's further figures (POPE: precision, recall, f1, yes_ratio) as Estimate dicts
    metric: str = "accuracy"
    interval: str = "wilson"
    others: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NONE = "<none>"


def prediction_concentration(predictions: Sequence[str | None], num_classes: int) -> tuple[float, float, float, float]:
    """(top-1 share, top-3 share, entropy in bits, entropy / log2(num_classes)) of the predicted-class histogram,
    counting only answers that name a class. Minority collapse shows as a top-1 share near 1 and entropy near 0."""
    named = [p for p in predictions if p is not None]
    if not named:
        return 0.0, 0.0, 0.0, 0.0
    counts = sorted(Counter(named).values(), reverse=True)
    total = len(named)
    top1 = counts[0] / total
    top3 = sum(counts[:3]) / total
    entropy = -sum((c / total) * math.log2(c / total) for c in counts)
    norm = entropy / math.log2(num_classes) if num_classes > 1 else 0.0
    return top1, top3, entropy, norm


def classification_metrics(
    references: Sequence[str],
    predictions: Sequence[str | None],
    correct: Sequence[bool | None],
    class_names: Sequence[str],
    *,
    leaks: dict[str, Sequence[bool]] | None = None,
    ranks: Sequence[int | None] | None = None,
    skipped: int = 0,
) -> ClassificationMetrics:
    """``correct[i]`` None = unjudged (left out of accuracy, counted). ``leaks[name][i]``: the answer names a label of
    dataset ``name`` (EMT's hallucination: answering with the fine-tuning set's labels). ``ranks[i]``: 0-based rank of
    the true class (rank mode) for top-k accuracy."""
    judged = [i for i, c in enumerate(correct) if c is not None]
    n = len(judged)
    hits = sum(1 for i in judged if correct[i])
    est = wilson_interval(hits, n) if n else None
    per_class_total: Counter[str] = Counter()
    per_class_hit: Counter[str] = Counter()
    confusion: dict[str, dict[str, int]] = {}
    for i in judged:
        ref = references[i]
        per_class_total[ref] += 1
        per_class_hit[ref] += bool(correct[i])
        row = confusion.setdefault(ref, {})
        key = predictions[i] if predictions[i] is not None else NONE
        row[key] = row.get(key, 0) + 1
    order = [c for c in class_names if c in per_class_total] + sorted(set(per_class_total) - set(class_names))
    per_class = {c: per_class_hit[c] / per_class_total[c] for c in order}
    no_class = sum(1 for i in judged if predictions[i] is None) / n if n else 0.0
    top1, top3, ent, nent = prediction_concentration([predictions[i] for i in judged], max(len(class_names), 1))
    leak_rates = {name: (sum(1 for i in judged if flags[i]) / n if n else 0.0) for name, flags in (leaks or {}).items()}
    top_k: dict[str, float] = {}
    if ranks is not None and n:
        for k in (1, 3, 5):
            if k <= max(len(class_names), 1):
                top_k[f"top{k}"] = sum(1 for i in judged if ranks[i] is not None and ranks[i] < k) / n
    return ClassificationMetrics(
        n=n, accuracy=est.value if est else None, accuracy_low=est.low if est else None,
        accuracy_high=est.high if est else None, top_k=top_k,
        per_class=per_class, confusion=confusion, no_class_rate=no_class, outside_label_set_rate=no_class,
        leak_rates=leak_rates, top1_share=top1, top3_share=top3, prediction_entropy=ent, normalised_entropy=nent,
        unjudged=len(correct) - n, skipped=skipped,
    )


# --------------------------------------------------------------------------------------- format vs knowledge

FORMAT_KEPT = "correct"  # the free-form answer names the right class
FORMAT_BROKE = "format broke"  # the answer misses, but the model still ranks / means the right class
KNOWLEDGE_LOST = "knowledge lost"  # the answer misses and so does the ranking / semantic judge
RANK_MISS = "rank miss"  # the answer is right, the ranking is not (rare; counted apart)


def classify_error(format_correct: bool, knowledge_correct: bool) -> str:
    """Why a sample is wrong. ``format_correct``: the exact judge accepts the generated answer. ``knowledge_correct``:
    the likelihood ranking puts the true class first (or a semantic judge accepts the answer)."""
    if format_correct:
        return FORMAT_KEPT if knowledge_correct else RANK_MISS
    return FORMAT_BROKE if knowledge_correct else KNOWLEDGE_LOST


@dataclass
class FormatKnowledgeSplit:
    """Errors of one evaluation split into "format broke" and "knowledge lost", over the ``n`` samples with both
    verdicts. Rates are shares of ``n`` with Wilson intervals; ``format_share`` is the share of the errors (format
    broke + knowledge lost) that are format errors."""

    n: int
    counts: dict[str, int]
    format_broke: Estimate
    knowledge_lost: Estimate
    format_share: Estimate | None  # None when there is no error to split
    knowledge_by: str = "rank"  # what decided "knows the class": rank, or a judge's name

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "counts": self.counts, "format_broke": self.format_broke.to_dict(),
                "knowledge_lost": self.knowledge_lost.to_dict(),
                "format_share": self.format_share.to_dict() if self.format_share else None,
                "knowledge_by": self.knowledge_by}


def format_knowledge_split(format_correct: Sequence[bool | None], knowledge_correct: Sequence[bool | None], *,
                           knowledge_by: str = "rank", confidence: float = 0.95) -> FormatKnowledgeSplit | None:
    """Classify every sample judged both ways (None on either side leaves it out); None when no sample is."""
    if len(format_correct) != len(knowledge_correct):
        raise ValueError(f"format and knowledge verdicts must describe the same samples: {len(format_correct)} vs "
                         f"{len(knowledge_correct)}")
    kinds = [classify_error(bool(f), bool(k)) for f, k in zip(format_correct, knowledge_correct)
             if f is not None and k is not None]
    if not kinds:
        return None
    counts = {kind: kinds.count(kind) for kind in (FORMAT_KEPT, FORMAT_BROKE, KNOWLEDGE_LOST, RANK_MISS)}
    n = len(kinds)
    errors = counts[FORMAT_BROKE] + counts[KNOWLEDGE_LOST]
    return FormatKnowledgeSplit(
        n=n, counts=counts, format_broke=wilson_interval(counts[FORMAT_BROKE], n, confidence),
        knowledge_lost=wilson_interval(counts[KNOWLEDGE_LOST], n, confidence),
        format_share=wilson_interval(counts[FORMAT_BROKE], errors, confidence) if errors else None,
        knowledge_by=knowledge_by)


def format_verdict(record: dict[str, Any], judge: str = "exact") -> bool | None:
    """Whether ``judge`` (default exact) accepted the record's generated answer; None when it did not judge it."""
    if record.get("skipped") or record.get("mode", "generate") != "generate":
        return None
    judgements = record.get("judgements") or {}
    verdict = judgements.get(judge)
    if verdict is not None:
        return verdict.get("correct")
    for other in judgements.values():  # a cascade keeps each stage's verdict in its raw field
        stages = (other.get("raw") or {}).get("stages") if isinstance(other.get("raw"), dict) else None
        if stages and judge in stages:
            return stages[judge].get("correct")
    return record.get("correct") if record.get("judge") == judge else None


def knowledge_verdict(record: dict[str, Any], by: str = "rank") -> bool | None:
    """Whether the model knows the class: ``by="rank"``: the likelihood ranking of the record (``eval.also_rank``,
    or a rank-mode record) puts the reference first; else the verdict of the judge named ``by``."""
    if record.get("skipped"):
        return None
    if by == "rank":
        if isinstance(record.get("rank"), dict):
            return record["rank"].get("correct")
        if record.get("mode") == "rank" and record.get("rank_of_reference") is not None:
            return record["rank_of_reference"] == 0
        return None
    verdict = (record.get("judgements") or {}).get(by)
    return verdict.get("correct") if verdict is not None else None


def split_records(records: Sequence[dict[str, Any]], rank_records: Sequence[dict[str, Any]] | None = None, *,
                  format_judge: str = "exact", knowledge_by: str = "rank",
                  confidence: float = 0.95) -> FormatKnowledgeSplit | None:
    """The split of one evaluation's records. The knowledge verdict comes from the same record (``also_rank`` or
    another judge) or, with ``rank_records`` (a rank-mode evaluation of the same samples), from the record with the
    same (dataset, id)."""
    if rank_records is not None:
        ranked = {(r["dataset"], r["id"]): knowledge_verdict(r, "rank") for r in rank_records}
        pairs = [(format_verdict(r, format_judge), ranked.get((r["dataset"], r["id"]))) for r in records]
    else:
        pairs = [(format_verdict(r, format_judge), knowledge_verdict(r, knowledge_by)) for r in records]
    return format_knowledge_split([f for f, _ in pairs], [k for _, k in pairs], knowledge_by=knowledge_by,
                                  confidence=confidence)
