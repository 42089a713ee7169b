"""Evaluation sharded over the processes ``accelerate launch`` / torchrun started (never processes of our own).

Process ``r`` of ``n`` takes every n-th sample still to do, starting at ``r``, and appends its records to its own
``samples.rank<r>.jsonl`` (no two writers on one file). Every process then gathers all records
(``accelerate.utils.gather_object``), so each scores the same records in dataset order and the metrics equal a
single-process run's. At the end the main process merges the shard files into ``samples.jsonl`` (one atomic
rewrite) and removes them. An interrupted sharded run resumes from samples.jsonl plus whatever shard files it
left, on any number of processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from ..runs import RunDir, read_jsonl
from ..runs.layout import SAMPLES

T = TypeVar("T")

SHARD_GLOB = "samples.rank*.jsonl"


@dataclass(frozen=True)
class Shard:
    """This process's place among the launched processes (``rank`` 0 of 1 when not launched)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def samples_name(self) -> str:
        return SAMPLES if self.world == 1 else f"samples.rank{self.rank}.jsonl"

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's share: items ``rank, rank + world, ...`` (balanced to within one item)."""
        return list(items[self.rank :: self.world])

    def gather(self, records: list[Any]) -> list[Any]:
        """Every process's ``records``, rank 0's first (all processes receive all)."""
        if self.world == 1:
            return list(records)
        return gather_object(records)

    def barrier(self) -> None:
        if self.world > 1:
            PartialState().wait_for_everyone()


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def current_shard() -> Shard:
    """The shard of this process: from accelerate's state when launched with several processes, else (0, 1).
    Starts the process group (gloo on CPU, nccl on GPUs) when the launcher has not yet."""
    if launched_world_size() <= 1:
        return Shard()
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes)


def process_device(device: str | None) -> str | None:
    """Under a launcher each process has its own GPU: ``cuda`` / ``auto`` become ``cuda:<local rank>``."""
    if launched_world_size() <= 1 or not torch.cuda.is_available() or device not in (None, "auto", "cuda"):
        return device
    return str(PartialState().device)


def shard_records(run: RunDir) -> list[dict[str, Any]]:
    """Records in shard files an earlier (interrupted) sharded run left in ``run``, by rank."""
    return [r for path in sorted(run.path.glob(SHARD_GLOB)) for r in read_jsonl(path)]


def merge_shards(run: RunDir) -> int:
    """Fold the shard files into samples.jsonl (once; exact duplicates dropped) and delete them. Main process
    only, after a barrier. Returns the number of records merged."""
    paths = sorted(Path(run.path).glob(SHARD_GLOB))
    if not paths:
        return 0
    records = run.samples()
    seen = {json.dumps(r, sort_keys=True) for r in records}
    added = 0
    for path in paths:
        for rec in read_jsonl(path):
            key = json.dumps(rec, sort_keys=True)
            if key not in seen:
                seen.add(key)
                records.append(rec)
                added += 1
    run.rewrite_samples(records)
    for path in paths:
        path.unlink()
    return added


def sum_stats(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    """Judge counters of every process added up (numbers summed, anything else taken from the first)."""
    out: dict[str, Any] = {}
    for stats in per_process:
        for judge, counters in stats.items():
            slot = out.setdefault(judge, {})
            for key, value in (counters or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key in slot:
                    slot[key] += value
                else:
                    slot.setdefault(key, value)
    return out
