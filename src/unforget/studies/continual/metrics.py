"""Continual-learning metrics from the accuracy matrix.

``R[i][j]`` is the accuracy on task ``j`` after training task ``i`` (tasks ``0 .. T-1`` in training order) and
``b[j]`` the base model's accuracy on task ``j`` before any training. The definitions follow avalanche
(``avalanche/evaluation/metrics/forgetting_bwt.py``, ``forward_transfer.py``), Lopez-Paz & Ranzato 2017
(GEM: ACC, BWT, FWT) and Chaudhry et al. 2018 (RWalk: forgetting):

- final average accuracy ``ACC = 1/T sum_j R[T-1][j]``
- average accuracy after step i ``A_i = 1/(i+1) sum_{j<=i} R[i][j]`` (tasks seen so far), and its mean over
  time ``1/T sum_i A_i`` (average incremental accuracy)
- backward transfer ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])`` (negative = forgetting). This is
  minus avalanche's StreamForgetting, whose per-experience forgetting is ``R[j][j] - R[T-1][j]``.
- forgetting of task j ``f_j = max_{l<T-1} R[l][j] - R[T-1][j]`` for ``j < T-1``, and its mean
  ``F = 1/(T-1) sum_{j<T-1} f_j``. The max runs over every earlier step (Chaudhry's definition), so a task
  whose accuracy peaked after later training counts the loss from that peak.
- forward transfer ``FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - b[j])``: accuracy on task j just before training
  it, relative to the base model (avalanche's ExperienceForwardTransfer with the base model as its
  initial evaluation).

Entries above the diagonal (evaluating a task not yet trained) may be missing (``None`` / NaN); forward
transfer then needs the first superdiagonal ``R[j-1][j]``. With one task only ACC and A are defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import DataError
from ...stats import (
    Estimate,
    json_float,
    bootstrap_indices,
    interval_from_resamples,
    wilson_interval,
)

# Resampled index blocks are built in chunks of at most this many elements per task.
_MAX_RESAMPLE_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class ContinualMetrics:
    """Point values of the continual-learning metrics (see the module docstring for the formulas).

    Figures that need at least two tasks (BWT, forgetting, FWT) are ``None`` with one task;
    ``forward_transfer`` is also ``None`` when a needed ``R[j-1][j]`` was not evaluated.
    ``forgetting_per_task[j]`` is f_j for j = 0..T-2; ``forward_transfer_per_task[k]`` is task k+1's.
    """

    n_tasks: int
    final_average_accuracy: float
    average_accuracy_over_time: float
    average_accuracy_per_step: tuple[float, ...]
    backward_transfer: float | None
    forgetting_per_task: tuple[float, ...]
    average_forgetting: float | None
    forward_transfer: float | None
    forward_transfer_per_task: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_tasks": self.n_tasks,
            "final_average_accuracy": json_float(self.final_average_accuracy),
            "average_accuracy_over_time": json_float(self.average_accuracy_over_time),
            "average_accuracy_per_step": [json_float(v) for v in self.average_accuracy_per_step],
            "backward_transfer": json_float(self.backward_transfer),
            "forgetting_per_task": [json_float(v) for v in self.forgetting_per_task],
            "average_forgetting": json_float(self.average_forgetting),
            "forward_transfer": json_float(self.forward_transfer),
            "forward_transfer_per_task": [json_float(v) for v in self.forward_transfer_per_task],
        }


@dataclass(frozen=True)
class ContinualEstimates:
    """Continual metrics with percentile bootstrap intervals over each task's test samples.

    ``accuracy_matrix[i][j]`` and ``base_accuracy[j]`` carry Wilson intervals for correct/incorrect flags
    (bootstrap intervals for other scores); ``None`` where a cell was not evaluated.
    """

    point: ContinualMetrics
    accuracy_matrix: tuple[tuple[Estimate | None, ...], ...]
    base_accuracy: tuple[Estimate, ...]
    final_average_accuracy: Estimate
    average_accuracy_over_time: Estimate
    backward_transfer: Estimate | None
    average_forgetting: Estimate | None
    forward_transfer: Estimate | None
    forgetting_per_task: tuple[Estimate, ...]
    forward_transfer_per_task: tuple[Estimate, ...]

    def to_dict(self) -> dict[str, Any]:
        def opt(e: Estimate | None) -> dict[str, Any] | None:
            return e.to_dict() if e is not None else None

        return {
            "point": self.point.to_dict(),
            "accuracy_matrix": [[opt(cell) for cell in row] for row in self.accuracy_matrix],
            "base_accuracy": [e.to_dict() for e in self.base_accuracy],
            "final_average_accuracy": self.final_average_accuracy.to_dict(),
            "average_accuracy_over_time": self.average_accuracy_over_time.to_dict(),
            "backward_transfer": opt(self.backward_transfer),
            "average_forgetting": opt(self.average_forgetting),
            "forward_transfer": opt(self.forward_transfer),
            "forgetting_per_task": [e.to_dict() for e in self.forgetting_per_task],
            "forward_transfer_per_task": [e.to_dict() for e in self.forward_transfer_per_task],
        }


def continual_metrics(
    accuracy_matrix: Sequence[Sequence[float | None]] | np.ndarray, base_accuracy: Sequence[float] | np.ndarray
) -> ContinualMetrics:
    """ACC, mean accuracy over time, BWT, forgetting and FWT from ``R[i][j]`` and the base accuracies ``b[j]``."""
    matrix = _as_accuracy_matrix(accuracy_matrix)
    base = _as_base_accuracy(base_accuracy, matrix.shape[0])
    batched = _metrics_batched(matrix[None], base[None])
    return _point_metrics(batched, matrix.shape[0])


def continual_metrics_with_intervals(
    correct: Sequence[Sequence[Sequence[float] | np.ndarray | None]],
    base_correct: Sequence[Sequence[float] | np.ndarray],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ContinualEstimates:
    """Continual metrics with bootstrap intervals, from per-sample results.

    ``correct[i][j]`` holds the per-sample correctness (True/False, 0/1, or scores) on task j's test set
    after training task i, ``None`` where not evaluated (only above the diagonal); ``base_correct[j]`` the
    base model's on the same samples. Task j's samples must be the same, in the same order, in every
    row and in ``base_correct[j]``: each resample draws one set of indices per task and uses it for all
    of them (paired over steps), while different tasks' test sets are resampled independently.
    """
    n_tasks = len(correct)
    if n_tasks == 0:
        raise DataError("continual metrics need at least one task; the per-sample results are empty.")
    if len(base_correct) != n_tasks:
        raise DataError(
            f"base_correct has {len(base_correct)} tasks but correct has {n_tasks}: give the base model's "
            "results on every task's test set."
        )
    cells: list[list[np.ndarray | None]] = []
    for i, row in enumerate(correct):
        if len(row) != n_tasks:
            raise DataError(f"correct[{i}] has {len(row)} tasks, expected {n_tasks} (one per task).")
        cells.append(
            [None if cell is None else _as_sample_array(cell, f"correct[{i}][{j}]") for j, cell in enumerate(row)]
        )
    base_cells = [_as_sample_array(cell, f"base_correct[{j}]") for j, cell in enumerate(base_correct)]
    task_sizes = [arr.size for arr in base_cells]
    for i in range(n_tasks):
        for j in range(n_tasks):
            cell = cells[i][j]
            if cell is None:
                if j <= i:
                    raise DataError(
                        f"correct[{i}][{j}] is missing: task {j} must be evaluated after training task {i} "
                        "(only cells above the diagonal, tasks not yet trained, may be left out)."
                    )
            elif cell.size != task_sizes[j]:
                raise DataError(
                    f"correct[{i}][{j}] has {cell.size} samples but base_correct[{j}] has {task_sizes[j]}: "
                    f"task {j} must be evaluated on the same samples at every step."
                )

    matrix = np.array([[np.nan if c is None else float(c.mean()) for c in row] for row in cells])
    base = np.array([float(c.mean()) for c in base_cells])
    point = _point_metrics(_metrics_batched(matrix[None], base[None]), n_tasks)

    rng = np.random.default_rng(seed)
    resampled = _resampled_metrics(cells, base_cells, n_resamples, rng)
    total = sum(task_sizes)
    earlier = sum(task_sizes[:-1])
    later = sum(task_sizes[1:])

    def estimate(key: str, value: float | None, n: int, column: int | None = None) -> Estimate | None:
        if value is None:
            return None
        draws = resampled[key] if column is None else resampled[key][:, column]
        return interval_from_resamples(value, draws, n=n, confidence=confidence, method="bootstrap_percentile_paired")

    def accuracy(values: np.ndarray, draws: np.ndarray) -> Estimate:
        if values.dtype == bool:
            return wilson_interval(int(values.sum()), values.size, confidence)
        return interval_from_resamples(float(values.mean()), draws, n=values.size, confidence=confidence,
                                       method="bootstrap_percentile")

    accuracy_cells = tuple(
        tuple(
            None if cells[i][j] is None else accuracy(cells[i][j], resampled["matrix"][:, i, j])
            for j in range(n_tasks)
        )
        for i in range(n_tasks)
    )
    return ContinualEstimates(
        point=point,
        accuracy_matrix=accuracy_cells,
        base_accuracy=tuple(accuracy(base_cells[j], resampled["base"][:, j]) for j in range(n_tasks)),
        final_average_accuracy=estimate("final_average_accuracy", point.final_average_accuracy, total),
        average_accuracy_over_time=estimate("average_accuracy_over_time", point.average_accuracy_over_time, total),
        backward_transfer=estimate("backward_transfer", point.backward_transfer, earlier),
        average_forgetting=estimate("average_forgetting", point.average_forgetting, earlier),
        forward_transfer=estimate("forward_transfer", point.forward_transfer, later),
        forgetting_per_task=tuple(
            estimate("forgetting_per_task", v, task_sizes[j], j) for j, v in enumerate(point.forgetting_per_task)
        ),
        forward_transfer_per_task=tuple(
            estimate("forward_transfer_per_task", v, task_sizes[k + 1], k)
            for k, v in enumerate(point.forward_transfer_per_task)
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Internals


def _metrics_batched(matrix: np.ndarray, base: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for a batch of accuracy matrices ``(B, T, T)`` and base accuracies ``(B, T)``.

    The single place the formulas live: point values use B = 1, bootstrap intervals B = resamples.
    """
    n_tasks = matrix.shape[-1]
    last = matrix[:, -1, :]
    seen = np.tril(np.ones((n_tasks, n_tasks), dtype=bool))
    per_step = np.where(seen, matrix, 0.0).sum(axis=-1) / np.arange(1, n_tasks + 1)
    out = {
        "matrix": matrix,
        "base": base,
        "final_average_accuracy": last.mean(axis=-1),
        "average_accuracy_per_step": per_step,
        "average_accuracy_over_time": per_step.mean(axis=-1),
    }
    if n_tasks > 1:
        diagonal = np.diagonal(matrix, axis1=1, axis2=2)
        out["backward_transfer"] = (last[:, :-1] - diagonal[:, :-1]).mean(axis=-1)
        # Rows 0..T-2; NaN above the diagonal (not evaluated yet) is skipped, the diagonal is always there.
        best_before_last = np.fmax.reduce(matrix[:, :-1, :-1], axis=1)
        forgetting = best_before_last - last[:, :-1]
        out["forgetting_per_task"] = forgetting
        out["average_forgetting"] = forgetting.mean(axis=-1)
        before_training = np.diagonal(matrix, offset=1, axis1=1, axis2=2)  # R[j-1][j], j = 1..T-1
        transfer = before_training - base[:, 1:]
        out["forward_transfer_per_task"] = transfer
        out["forward_transfer"] = transfer.mean(axis=-1)
    return out


def _point_metrics(batched: dict[str, np.ndarray], n_tasks: int) -> ContinualMetrics:
    def scalar(key: str) -> float | None:
        if key not in batched:
            return None
        value = float(batched[key][0])
        return None if np.isnan(value) else value

    def vector(key: str) -> tuple[float, ...]:
        if key not in batched:
            return ()
        return tuple(float(v) for v in batched[key][0])

    transfer = vector("forward_transfer_per_task")
    if any(np.isnan(v) for v in transfer):
        transfer = ()
    return ContinualMetrics(
        n_tasks=n_tasks,
        final_average_accuracy=float(batched["final_average_accuracy"][0]),
        average_accuracy_over_time=float(batched["average_accuracy_over_time"][0]),
        average_accuracy_per_step=vector("average_accuracy_per_step"),
        backward_transfer=scalar("backward_transfer"),
        forgetting_per_task=vector("forgetting_per_task"),
        average_forgetting=scalar("average_forgetting"),
        forward_transfer=scalar("forward_transfer"),
        forward_transfer_per_task=transfer,
    )


def _resampled_metrics(
    cells: list[list[np.ndarray | None]], base_cells: list[np.ndarray], n_resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    n_tasks = len(base_cells)
    largest = max(arr.size for arr in base_cells)
    chunk = max(1, _MAX_RESAMPLE_ELEMENTS // largest)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        matrix = np.full((k, n_tasks, n_tasks), np.nan)
        base = np.empty((k, n_tasks))
        for j, base_values in enumerate(base_cells):
            idx = bootstrap_indices(rng, base_values.size, k)  # one draw per task, shared by every step
            base[:, j] = base_values[idx].mean(axis=-1)
            for i in range(n_tasks):
                if cells[i][j] is not None:
                    matrix[:, i, j] = cells[i][j][idx].mean(axis=-1)
        parts.append(_metrics_batched(matrix, base))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _as_accuracy_matrix(values: Sequence[Sequence[float | None]] | np.ndarray) -> np.ndarray:
    try:
        rows = [[np.nan if v is None else float(v) for v in row] for row in values]
    except (TypeError, ValueError) as exc:
        raise DataError(f"the accuracy matrix must hold numbers (or None above the diagonal): {exc}") from exc
    n_tasks = len(rows)
    if n_tasks == 0 or any(len(row) != n_tasks for row in rows):
        raise DataError(
            f"the accuracy matrix must be square T x T (R[i][j] = accuracy on task j after training task i), "
            f"got row lengths {[len(row) for row in rows]}."
        )
    matrix = np.array(rows, dtype=float)
    if np.isinf(matrix).any():
        i, j = (int(x) for x in np.argwhere(np.isinf(matrix))[0])
        raise DataError(f"R[{i}][{j}] is infinite: accuracies must be finite numbers.")
    lower = np.tril(np.ones_like(matrix, dtype=bool))
    missing = np.argwhere(np.isnan(matrix) & lower)
    if missing.size:
        i, j = (int(x) for x in missing[0])
        raise DataError(
            f"R[{i}][{j}] is missing: task {j} must be evaluated after training task {i} "
            "(only cells above the diagonal, tasks not yet trained, may be left out)."
        )
    return matrix


def _as_base_accuracy(values: Sequence[float] | np.ndarray, n_tasks: int) -> np.ndarray:
    base = np.asarray(values, dtype=float).reshape(-1)
    if base.size != n_tasks:
        raise DataError(
            f"base_accuracy has {base.size} values but the accuracy matrix has {n_tasks} tasks: give the base "
            "model's accuracy on every task (it is what forward transfer is measured against)."
        )
    if not np.isfinite(base).all():
        j = int(np.flatnonzero(~np.isfinite(base))[0])
        raise DataError(f"base_accuracy[{j}] is {base[j]}: every base accuracy must be a finite number.")
    return base


def _as_sample_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D sequence of per-sample results, got shape {arr.shape}.")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name} must hold True/False, 0/1 or numeric scores, got values of type {arr.dtype}.")
    arr = arr.astype(float)
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(f"{name}[{i}] is {arr[i]}: every per-sample result must be a finite number.")
    if np.isin(arr, (0.0, 1.0)).all():
        return arr.astype(bool)  # correctness flags: their cells get Wilson intervals
    return arr
