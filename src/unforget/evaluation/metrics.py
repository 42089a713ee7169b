"""Classification metrics from judged records (pure functions over lists; unit-tested on hand-made cases)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..stats import wilson_interval


@dataclass
class ClassificationMetrics:
    """Accuracy over judged samples; unjudged (judge failures) and skipped samples are counted apart."""

    n: int  # samples with a verdict
    accuracy: float
    accuracy_low: float
    accuracy_high: float
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

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

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
    est = wilson_interval(hits, n)
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
        n=n, accuracy=est.value, accuracy_low=est.low, accuracy_high=est.high, top_k=top_k,
        per_class=per_class, confusion=confusion, no_class_rate=no_class, outside_label_set_rate=no_class,
        leak_rates=leak_rates, top1_share=top1, top3_share=top3, prediction_entropy=ent, normalised_entropy=nent,
        unjudged=len(correct) - n, skipped=skipped,
    )
