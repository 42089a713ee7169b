"""Batch sizes that back off on out-of-memory instead of crashing, with accelerate's ``find_executable_batch_size``
(after each out-of-memory error it empties the device cache and retries with 0.9 x the batch; it gives up below 1).
Any other error goes through unchanged."""

from __future__ import annotations

from typing import Callable, TypeVar

from accelerate.utils import find_executable_batch_size

R = TypeVar("R")


def with_oom_backoff(run: Callable[[int], R], batch_size: int) -> R:
    """``run(batch_size)``; on out-of-memory, again with a smaller batch until one fits. ``run`` must be safe to
    repeat: it is called again from the start with the smaller batch."""
    @find_executable_batch_size(starting_batch_size=batch_size)
    def attempt(size: int) -> R:
        return run(size)

    return attempt()
