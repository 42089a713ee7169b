"""Data-hybrid training: several sources mixed into one fine-tuning set, in set proportions and a fixed budget.

The options are LLaMA-Factory's (``mix_strategy``, ``interleave_probs``) plus ``budget`` and ``mix_by``:

- ``concat``: every source in full, one after the other (``budget`` takes each source's share of it, in
  proportion to the sources' sizes);
- ``interleave_under``: source *i* gives ``interleave_probs[i]`` of the examples and no example is repeated, so
  the mix ends when the first source runs out (Hugging Face ``interleave_datasets(stopping_strategy=
  "first_exhausted")``); a ``budget`` larger than that is an error;
- ``interleave_over``: the same shares, and a source that runs out starts again from its first example, so the
  mix ends when every source was used in full (``"all_exhausted"``), or at ``budget``.

Counts are whole examples by the largest-remainder rule, so they always add up to the budget. A source that gives
fewer examples than it has gives them by the ``data.sampling`` rule, as a ``limit`` does (a seeded class-stratified
sample by default, whose picks within a class grow with the count, so the mixes of two budgets or two shares overlap
nearly as much as they can; ``head``: its first examples).

``mix_by`` says how the sources meet in training: ``sample`` shuffles all examples together every epoch (each
batch holds about the shares); ``batch`` makes every batch come from one source (the order of the batches is
shuffled every epoch); what a source has beyond whole batches is pooled into mixed batches.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Sequence, TypeVar

import numpy as np
import torch

from ..data.sampling import largest_remainder
from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import TrainDataConfig

T = TypeVar("T")

MixStrategy = Literal["concat", "interleave_under", "interleave_over"]
MixBy = Literal["sample", "batch"]
MIX_STRATEGIES: tuple[str, ...] = ("concat", "interleave_under", "interleave_over")


def normalised_probs(probs: Sequence[float] | None, n_sources: int) -> list[float]:
    """``interleave_probs`` checked and scaled to sum 1 (None: equal shares)."""
    if probs is None:
        return [1.0 / n_sources] * n_sources
    if len(probs) != n_sources:
        raise ConfigError(f"data.interleave_probs has {len(probs)} values for {n_sources} datasets: give one per "
                          "dataset, in the order of data.datasets")
    if any(not math.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
        raise ConfigError(f"data.interleave_probs must be non-negative with a positive sum, got {list(probs)}")
    total = float(sum(probs))
    return [float(p) / total for p in probs]


def mix_counts(sizes: Sequence[int], probs: Sequence[float] | None = None, strategy: str = "concat",
               budget: int | None = None, names: Sequence[str] | None = None) -> list[int]:
    """How many examples each source gives to the mix (more than its size under ``interleave_over``: repeats).

    ``sizes``: examples each source has; ``probs``: the interleave shares; ``budget``: the total (None: what
    the strategy gives, see the module docstring). ``names`` only label the error messages."""
    names = list(names or [f"dataset {i}" for i in range(len(sizes))])
    if not sizes:
        raise ConfigError("nothing to mix: no dataset given")
    if any(s < 0 for s in sizes):
        raise ConfigError(f"dataset sizes must be >= 0, got {list(sizes)}")
    if budget is not None and budget < 1:
        raise ConfigError(f"data.budget must be >= 1, got {budget}")
    if strategy not in MIX_STRATEGIES:
        raise ConfigError(f"data.mix_strategy '{strategy}' is unknown; use one of {', '.join(MIX_STRATEGIES)}")
    if strategy == "concat":
        if probs is not None:
            raise ConfigError("data.interleave_probs needs mix_strategy interleave_under or interleave_over "
                              "(concat keeps every dataset's own size)")
        available = sum(sizes)
        if budget is None:
            return list(sizes)
        if budget > available:
            raise ConfigError(f"data.budget {budget} exceeds the {available} examples of the datasets together; "
                              "lower it or use mix_strategy interleave_over to repeat examples")
        return largest_remainder(budget, sizes)
    shares = normalised_probs(probs, len(sizes))
    used = [i for i, p in enumerate(shares) if p > 0]
    empty = [names[i] for i in used if sizes[i] == 0]
    if empty:
        raise ConfigError(f"{', '.join(empty)} has no example to mix but a share above 0 in data.interleave_probs")
    if strategy == "interleave_under":
        # the largest total whose exact shares fit every source without repeating an example
        largest = _largest_fitting_total(sizes, shares)
        if budget is None:
            return largest_remainder(largest, shares)
        counts = largest_remainder(budget, shares)
        short = [i for i in used if counts[i] > sizes[i]]
        if short:
            i = short[0]
            raise ConfigError(f"data.budget {budget} with share {shares[i]:.3g} asks {counts[i]} examples of "
                              f"{names[i]}, which has {sizes[i]}; interleave_under never repeats an example, so "
                              f"the budget can be at most {largest}. Lower the budget or use interleave_over")
        return counts
    # interleave_over: the smallest total that uses every example of every source at least once
    total = budget if budget is not None else _smallest_covering_total(sizes, shares)
    return largest_remainder(total, shares)


def _largest_fitting_total(sizes: Sequence[int], shares: Sequence[float]) -> int:
    total = int(min(sizes[i] / p for i, p in enumerate(shares) if p > 0) + 1e-9)
    def fits(t: int) -> bool:
        return all(c <= s for c, s in zip(largest_remainder(t, shares), sizes))

    # every exact share p_i * total <= size_i, so the rounded counts fit too (a count is at most its share's
    # ceiling); a larger total would only fit by rounding a share down, which bends the proportions
    while total > 0 and not fits(total):
        total -= 1
    return total


def _smallest_covering_total(sizes: Sequence[int], shares: Sequence[float]) -> int:
    def covers(t: int) -> bool:
        return all(c >= s or p == 0 for c, s, p in zip(largest_remainder(t, shares), sizes, shares))

    # every exact share p_i * total >= size_i (a smaller total would only cover by rounding a share up)
    total = max(1, math.ceil(max(sizes[i] / p for i, p in enumerate(shares) if p > 0) - 1e-9))
    while not covers(total):
        total += 1
    return total


def take(items: Sequence[T], count: int) -> list[T]:
    """The first ``count`` items, starting again from the first when ``count`` exceeds the length."""
    if count <= len(items):
        return list(items[:count])
    if not items:
        raise ConfigError("cannot repeat an empty source")
    return [items[i % len(items)] for i in range(count)]


def mix_sources(per_source: Sequence[Sequence[T]], cfg: TrainDataConfig, names: Sequence[str] | None = None,
                pick: Callable[[int, Sequence[T], int], list[T]] | None = None) -> list[T]:
    """The training examples of ``cfg.datasets`` (one list per dataset, in order) mixed as ``cfg`` says.

    ``pick(source index, examples, count)`` chooses ``count`` of a source's examples when the mix needs fewer than
    it has (the training data passes the ``data.sampling`` rule); None: the first ``count``. A source used more
    than once over repeats all its examples in order (:func:`take`)."""
    if cfg.mix_strategy == "concat" and cfg.budget is None:
        return [x for source in per_source for x in source]
    counts = mix_counts([len(s) for s in per_source], cfg.interleave_probs, cfg.mix_strategy, cfg.budget, names)
    return [x for i, (source, k) in enumerate(zip(per_source, counts))
            for x in (pick(i, source, k) if pick is not None and 0 < k < len(source) else take(source, k))]


def check_mixing(cfg: TrainDataConfig) -> None:
    """Config-time checks of the mixing fields (the counts are checked once the datasets' sizes are known)."""
    if cfg.mix_strategy not in MIX_STRATEGIES:
        raise ConfigError(f"data.mix_strategy '{cfg.mix_strategy}' is unknown; use one of {', '.join(MIX_STRATEGIES)}")
    if cfg.mix_by not in ("sample", "batch"):
        raise ConfigError(f"data.mix_by '{cfg.mix_by}' is unknown; use sample or batch")
    if cfg.budget is not None and cfg.budget < 1:
        raise ConfigError(f"data.budget must be >= 1, got {cfg.budget}")
    if cfg.mix_strategy == "concat" and cfg.interleave_probs is not None:
        raise ConfigError("data.interleave_probs needs mix_strategy interleave_under or interleave_over")
    if cfg.interleave_probs is not None:
        normalised_probs(cfg.interleave_probs, len(cfg.datasets))


def source_batch_order(sources: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[int]:
    """Indices in an order whose consecutive ``batch_size`` chunks each come from one source.

    Each source's indices are permuted and cut into whole batches; what is left of every source is pooled into
    mixed batches; all whole batches are then permuted, and a last partial batch (the total is not a multiple of
    ``batch_size``) stays last so that it does not shift the batches after it."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    by_source: dict[int, list[int]] = {}
    for index, source in enumerate(sources):
        by_source.setdefault(source, []).append(index)
    blocks: list[list[int]] = []
    leftover: list[int] = []
    for source in sorted(by_source):
        members = np.asarray(by_source[source])[rng.permutation(len(by_source[source]))].tolist()
        whole = len(members) - len(members) % batch_size
        blocks += [members[i : i + batch_size] for i in range(0, whole, batch_size)]
        leftover += members[whole:]
    mixed = [leftover[i : i + batch_size] for i in range(0, len(leftover), batch_size)]
    partial = mixed.pop() if mixed and len(mixed[-1]) < batch_size else []
    blocks += mixed
    order = [i for k in rng.permutation(len(blocks)).tolist() for i in blocks[k]]
    return order + partial


class SourceBatchSampler(torch.utils.data.Sampler[int]):
    """``mix_by: batch``: every epoch a fresh :func:`source_batch_order` drawn from (seed, epoch) alone, like
    :class:`~unforget.training.data.EpochShuffleSampler`, so resumes and processes agree."""

    def __init__(self, sources: Sequence[int], batch_size: int, seed: int):
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(source_batch_order(self.sources, self.batch_size, rng))
