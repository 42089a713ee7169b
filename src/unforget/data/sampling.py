"""Which samples a ``limit`` keeps: a seeded, class-stratified sample by default, the first N when asked.

A split is often sorted by class (an image folder, a CSV written class by class), so its first N samples can
cover a few classes only. ``stratified`` gives each class a share of the ``limit`` in proportion to its share of
the split (largest-remainder rule, at least one sample per class when ``limit`` is at least the number of
classes) and draws the samples within a class with a numpy Generator keyed on (seed, dataset/split, class).
Sets without class labels are stratified by their reference answer (VQA), or drawn uniformly (captions, text).
``head`` keeps the first N, as unforget did before.

The sample depends only on the split, the limit, the strategy and the seed: never on the model or the epoch, so
the base model, every epoch and every arm of a study answer the same samples, and paired tests hold. Samples are
returned in the split's order, so outputs stay in a stable order too.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Literal, Sequence, TypeVar

import numpy as np

from ..errors import ConfigError
from .types import ImageDataset, Sample, Task

T = TypeVar("T")

SamplingStrategy = Literal["stratified", "head"]
SAMPLING_STRATEGIES: tuple[str, ...] = ("stratified", "head")
StratifiedBy = Literal["class", "answer", "uniform"]


@dataclass(frozen=True)
class Sampling:
    """How the samples of one dataset were drawn from its split, as metrics.json states it."""

    strategy: str  # stratified | head
    limit: int | None
    seed: int
    n: int  # samples drawn
    population: int  # samples in the split
    stratified_by: StratifiedBy | None = None  # what a stratified sample balanced; None: head, or the whole split

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split into whole numbers proportional to ``weights`` that add up to ``total`` (Hamilton's
    method: floors first, the leftover units to the largest remainders, the earlier weight on a tie)."""
    if total < 0:
        raise ConfigError(f"cannot split a negative total ({total})")
    w = np.asarray(weights, dtype=float)
    if w.size == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ConfigError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    exact = total * w / w.sum()
    counts = np.floor(exact + 1e-9).astype(int)
    leftover = total - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:leftover]:
        counts[i] += 1
    return [int(c) for c in counts]


def stratified_counts(sizes: Sequence[int], limit: int) -> list[int]:
    """How many samples each class gives to a sample of ``limit`` (``limit`` < the classes' total size).

    Largest remainder over the class sizes (ties to the earlier class: callers put the classes in a seeded order);
    when ``limit`` is at least the number of classes, a class left at 0 takes one sample from the class most over
    its exact share (then the larger class, then the earlier one), so every class is present."""
    counts = largest_remainder(limit, sizes)
    if limit >= len(sizes):
        total = sum(sizes)
        exact = [limit * s / total for s in sizes]
        for empty in [i for i, c in enumerate(counts) if c == 0]:
            donor = min((i for i, c in enumerate(counts) if c > 1),
                        key=lambda i: (-(counts[i] - exact[i]), -counts[i], i))
            counts[donor] -= 1
            counts[empty] += 1
    return counts


def select(
    samples: Sequence[T],
    limit: int | None,
    *,
    strategy: SamplingStrategy = "stratified",
    seed: int = 0,
    key: str = "",
    label_of: Callable[[T], Hashable | None] = lambda s: getattr(s, "label", None),
) -> list[T]:
    """At most ``limit`` of ``samples`` (None: all), in their original order.

    ``stratified``: a seeded sample stratified over ``label_of`` (the class label by default; a ``label_of`` that
    returns None for every sample gives a seeded uniform sample); ``key`` names the dataset split (``digits/test``)
    so that two splits draw differently. ``head``: the first ``limit``."""
    if strategy not in SAMPLING_STRATEGIES:
        raise ConfigError(f"sampling '{strategy}' is unknown; use one of {', '.join(SAMPLING_STRATEGIES)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if limit is None or limit >= len(samples):
        return list(samples)
    if strategy == "head":
        return list(samples[:limit])
    by_stratum: dict[Hashable | None, list[int]] = {}
    for index, sample in enumerate(samples):
        by_stratum.setdefault(label_of(sample), []).append(index)
    # a seeded class order decides ties of the allocation, so no class is favoured for sorting first
    strata = sorted(by_stratum, key=repr)
    strata = [strata[i] for i in _rng(seed, key).permutation(len(strata))]
    counts = stratified_counts([len(by_stratum[s]) for s in strata], limit)
    chosen: list[int] = []
    for stratum, count in zip(strata, counts):
        members = by_stratum[stratum]
        # a permutation per class keyed on the class itself: a larger limit keeps the smaller limit's picks
        order = _rng(seed, key, repr(stratum)).permutation(len(members))
        chosen.extend(members[i] for i in order[:count])
    return [samples[i] for i in sorted(chosen)]


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32).tolist())


def stratified_by(task: Task) -> StratifiedBy:
    """What a stratified sample of a ``task`` set is balanced over: classes, VQA answers, or nothing."""
    return {"classification": "class", "vqa": "answer"}.get(task, "uniform")  # type: ignore[return-value]


def stratum_of(task: Task) -> Callable[[Sample], Hashable | None]:
    """The stratum of a sample of a ``task`` set: its class, its normalised VQA answer, or None (uniform)."""
    by = stratified_by(task)
    if by == "class":
        return lambda s: s.label
    if by == "answer":
        return lambda s: s.answer.strip().lower() if s.answer is not None else None
    return lambda s: None


def select_split(ds: ImageDataset, split: str, limit: int | None, *, strategy: SamplingStrategy = "stratified",
                 seed: int = 0) -> tuple[list[Sample], Sampling]:
    """The samples of ``ds``'s ``split`` that a ``limit`` keeps (see :func:`select`), and how they were drawn."""
    population = ds.split(split)
    chosen = select(population, limit, strategy=strategy, seed=seed, key=f"{ds.name}/{split}",
                    label_of=stratum_of(ds.task))
    whole = len(chosen) == len(population)
    by = stratified_by(ds.task) if strategy == "stratified" and not whole else None
    return chosen, Sampling(strategy, limit, seed, len(chosen), len(population), by)


__all__ = ["SAMPLING_STRATEGIES", "Sampling", "SamplingStrategy", "largest_remainder", "select",
           "select_split", "stratified_by", "stratified_counts", "stratum_of"]
