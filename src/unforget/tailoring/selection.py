"""Exact top-k over scores spread across many tensors, without concatenating them.

For large models the k-th largest score is found by a two-pass radix select on the float bits (a histogram of the top 16
bits, then of the low 16 bits inside the boundary bucket), so selecting 10% of a 7B model needs no copy
of all its scores. Ties at the threshold are broken deterministically: the first ones in tensor order,
then flat-index order, are kept, so exactly k entries are selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

_BUCKETS = 1 << 16


def sortable_keys(scores: torch.Tensor) -> torch.Tensor:
    """float32 scores -> int32 keys with the same order (NaN must be removed beforehand)."""
    bits = scores.detach().to(torch.float32).contiguous().view(torch.int32)
    # negative floats order backwards in their bit pattern: flip their 31 magnitude bits
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


_MINUS_INF_KEY = int(sortable_keys(torch.tensor([float("-inf")]))[0])


@dataclass(frozen=True)
class TopKThreshold:
    """Keep entries whose key is above ``key``, plus the first ``ties`` entries equal to it."""

    key: int
    ties: int
    selected: int  # = entries above + ties


_NOTHING = TopKThreshold(key=2**31 - 1, ties=0, selected=0)


def topk_threshold(
    chunks: Callable[[], Iterable[torch.Tensor]], k: int, *, direct_limit: int = 1 << 24
) -> TopKThreshold:
    """The exact threshold of the ``k`` largest finite scores over all tensors ``chunks()`` yields.

    ``chunks`` may be called several times and must yield the same tensors in the same order. Up to
    ``direct_limit`` entries in all, their keys are concatenated and ranked directly; above it, a radix
    select bounds memory by one tensor. ``-inf`` scores are never selected, so fewer than ``k`` entries
    are selected when fewer are finite.
    """
    total = sum(chunk.numel() for chunk in chunks())
    if total <= direct_limit:
        keys = torch.cat([sortable_keys(chunk).reshape(-1) for chunk in chunks()] or [torch.empty(0, dtype=torch.int32)])
        k = min(k, int((keys > _MINUS_INF_KEY).sum()))
        if k <= 0:
            return _NOTHING
        key = int(torch.topk(keys, k, sorted=False).values.min())
        return TopKThreshold(key=key, ties=k - int((keys > key).sum()), selected=k)

    high_hist = torch.zeros(_BUCKETS, dtype=torch.int64)
    finite = 0
    for chunk in chunks():
        keys = sortable_keys(chunk).reshape(-1)
        finite += int((keys > _MINUS_INF_KEY).sum())
        high_hist += torch.bincount(((keys >> 16) + (_BUCKETS // 2)).long(), minlength=_BUCKETS).cpu()
    k = min(k, finite)
    if k <= 0:
        return _NOTHING
    high, above_high = _bucket_of_kth(high_hist, k)

    low_hist = torch.zeros(_BUCKETS, dtype=torch.int64)
    for chunk in chunks():
        keys = sortable_keys(chunk).reshape(-1)
        in_bucket = keys[((keys >> 16) + (_BUCKETS // 2)) == high]
        low_hist += torch.bincount((in_bucket & 0xFFFF).long(), minlength=_BUCKETS).cpu()
    low, above_low = _bucket_of_kth(low_hist, k - above_high)
    key = ((high - _BUCKETS // 2) << 16) | low
    above = above_high + above_low
    return TopKThreshold(key=key, ties=k - above, selected=k)


def _bucket_of_kth(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the k-th largest entry and how many entries lie in higher buckets."""
    from_top = torch.cumsum(hist.flip(0), 0)
    position = int(torch.searchsorted(from_top, torch.tensor(k)))
    bucket = _BUCKETS - 1 - position
    above = int(from_top[position - 1]) if position > 0 else 0
    return bucket, above


@dataclass
class TopKSelector:
    """Turns a threshold into masks, tensor by tensor, in the order used to break ties."""

    threshold: TopKThreshold
    _ties_left: int = field(init=False)

    def __post_init__(self) -> None:
        self._ties_left = self.threshold.ties

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        keys = sortable_keys(scores)
        mask = keys > self.threshold.key
        if self._ties_left > 0:
            tied = torch.nonzero((keys == self.threshold.key).reshape(-1)).squeeze(1)[: self._ties_left]
            mask.view(-1)[tied] = True
            self._ties_left -= int(tied.numel())
        return mask


def topk_mask(scores: torch.Tensor, k: int, *, direct_limit: int = 1 << 24) -> torch.Tensor:
    """Mask of the ``k`` largest finite entries of one tensor (ties: lowest flat index first)."""
    return TopKSelector(topk_threshold(lambda: [scores], k, direct_limit=direct_limit)).mask(scores)
