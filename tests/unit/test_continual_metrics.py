"""Continual-learning metrics on hand-made accuracy matrices, checked against avalanche's definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unforget.errors import DataError
from unforget.stats import wilson_interval
from unforget.studies.continual.metrics import continual_metrics, continual_metrics_with_intervals

# R[i][j] = accuracy on task j after training task i.
R3 = [
    [0.9, 0.1, 0.2],
    [0.6, 0.8, 0.3],
    [0.5, 0.7, 0.9],
]
BASE3 = [0.1, 0.2, 0.25]


def test_hand_computed_three_tasks():
    m = continual_metrics(R3, BASE3)
    assert m.n_tasks == 3
    # ACC = (0.5 + 0.7 + 0.9) / 3
    assert m.final_average_accuracy == pytest.approx(0.7)
    # A_0 = 0.9, A_1 = (0.6 + 0.8) / 2 = 0.7, A_2 = 0.7 -> mean 2.3 / 3
    assert m.average_accuracy_per_step == pytest.approx((0.9, 0.7, 0.7))
    assert m.average_accuracy_over_time == pytest.approx(2.3 / 3)
    # BWT = ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert m.backward_transfer == pytest.approx(-0.25)
    # f_0 = max(0.9, 0.6) - 0.5, f_1 = max(0.1, 0.8) - 0.7
    assert m.forgetting_per_task == pytest.approx((0.4, 0.1))
    assert m.average_forgetting == pytest.approx(0.25)
    # FWT = ((R[0][1] - b1) + (R[1][2] - b2)) / 2 = ((0.1 - 0.2) + (0.3 - 0.25)) / 2
    assert m.forward_transfer_per_task == pytest.approx((-0.1, 0.05))
    assert m.forward_transfer == pytest.approx(-0.025)


def test_forgetting_takes_the_best_earlier_accuracy_not_the_one_right_after_training():
    # Task 0 improved after training task 1 (0.5 -> 0.8), then dropped to 0.3.
    matrix = [
        [0.5, 0.0, 0.0],
        [0.8, 0.9, 0.0],
        [0.3, 0.9, 0.7],
    ]
    m = continual_metrics(matrix, [0.0, 0.0, 0.0])
    assert m.forgetting_per_task == pytest.approx((0.5, 0.0))  # max(0.5, 0.8) - 0.3, max(0.0, 0.9) - 0.9
    assert m.average_forgetting == pytest.approx(0.25)
    assert m.backward_transfer == pytest.approx(((0.3 - 0.5) + (0.9 - 0.9)) / 2)


def _avalanche_reference(matrix: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """Replays avalanche's StreamForgetting and StreamForwardTransfer bookkeeping on an accuracy matrix.

    Forgetting: ``initial`` is recorded when the evaluated experience is the one just trained, ``last``
    at every other evaluation; the stream value averages ``initial - last`` over experiences with both.
    Forward transfer: ``initial`` is the evaluation before any training, ``previous`` the evaluation of
    experience j right after training j-1.
    """
    n_tasks = matrix.shape[0]
    initial: dict[int, float] = {}
    last: dict[int, float] = {}
    for trained in range(n_tasks):
        last = {}  # before_eval: reset_last()
        for evaluated in range(n_tasks):
            if trained == evaluated:
                initial[evaluated] = matrix[trained, evaluated]
            else:
                last[evaluated] = matrix[trained, evaluated]
    stream_forgetting = np.mean([initial[k] - last[k] for k in initial.keys() & last.keys()])
    at_init = dict(enumerate(base))  # evaluation before any training
    previous = {j: matrix[j - 1, j] for j in range(1, n_tasks)}  # trained == evaluated - 1
    stream_forward = np.mean([previous[j] - at_init[j] for j in previous])
    return float(stream_forgetting), float(stream_forward)


def test_matches_avalanche_definitions_on_random_matrices():
    rng = np.random.default_rng(0)
    for n_tasks in (2, 3, 5):
        matrix = rng.random((n_tasks, n_tasks))
        base = rng.random(n_tasks)
        m = continual_metrics(matrix, base)
        stream_forgetting, stream_forward = _avalanche_reference(matrix, base)
        # avalanche: BWT = -StreamForgetting (forgetting_to_bwt); FWT as StreamForwardTransfer.
        assert m.backward_transfer == pytest.approx(-stream_forgetting)
        assert m.forward_transfer == pytest.approx(stream_forward)
        # Chaudhry's forgetting uses the best earlier accuracy, so it is never below avalanche's.
        assert m.average_forgetting >= stream_forgetting - 1e-12


def test_single_task_defines_only_accuracy():
    m = continual_metrics([[0.8]], [0.3])
    assert m.final_average_accuracy == pytest.approx(0.8)
    assert m.average_accuracy_over_time == pytest.approx(0.8)
    assert m.backward_transfer is None and m.average_forgetting is None and m.forward_transfer is None
    assert m.forgetting_per_task == () and m.forward_transfer_per_task == ()
    assert json.loads(json.dumps(m.to_dict(), allow_nan=False))["backward_transfer"] is None


def test_cells_above_the_diagonal_may_be_missing():
    matrix = [
        [0.9, 0.4, None],
        [0.7, 0.8, None],
        [0.6, 0.75, 0.85],
    ]
    m = continual_metrics(matrix, [0.3, 0.3, 0.3])
    assert m.forward_transfer is None and m.forward_transfer_per_task == ()
    assert m.backward_transfer == pytest.approx(((0.6 - 0.9) + (0.75 - 0.8)) / 2)
    assert m.forgetting_per_task == pytest.approx((0.3, 0.05))
    assert m.average_accuracy_over_time == pytest.approx((0.9 + 0.75 + (0.6 + 0.75 + 0.85) / 3) / 3)
    json.dumps(m.to_dict(), allow_nan=False)


def test_missing_cell_on_or_below_the_diagonal_is_an_error():
    with pytest.raises(DataError, match=r"R\[1\]\[0\] is missing"):
        continual_metrics([[0.9, 0.1], [None, 0.8]], [0.1, 0.1])


@pytest.mark.parametrize(
    "matrix,base,message",
    [
        ([[0.9, 0.1], [0.8]], [0.1, 0.1], "square"),
        ([], [], "square"),
        ([[0.9, 0.1], [0.8, 0.7]], [0.1], "base_accuracy has 1"),
        ([[0.9, 0.1], [0.8, float("inf")]], [0.1, 0.2], "infinite"),
        ([[0.9, "a"], [0.8, 0.7]], [0.1, 0.2], "numbers"),
    ],
)
def test_malformed_inputs_raise_data_error(matrix, base, message):
    with pytest.raises(DataError, match=message):
        continual_metrics(matrix, base)


# ---------------------------------------------------------------------------------------------------------
# Intervals from per-sample results


def _simulated_results(rng: np.random.Generator, matrix, base, n_per_task):
    """Per-sample flags: each task's samples have a latent difficulty so steps are correlated."""
    n_tasks = len(base)
    correct = [[None] * n_tasks for _ in range(n_tasks)]
    base_correct = []
    for j in range(n_tasks):
        u = rng.random(n_per_task)  # one uniform per sample, shared across steps: paired correctness
        base_correct.append(u < base[j])
        for i in range(n_tasks):
            if matrix[i][j] is not None:
                correct[i][j] = u < matrix[i][j]
    return correct, base_correct


def test_intervals_point_values_match_the_matrix_metrics():
    rng = np.random.default_rng(1)
    correct, base_correct = _simulated_results(rng, R3, BASE3, 80)
    est = continual_metrics_with_intervals(correct, base_correct, n_resamples=500)
    matrix = [[float(np.mean(c)) for c in row] for row in correct]
    expected = continual_metrics(matrix, [float(np.mean(b)) for b in base_correct])
    assert est.point == expected
    assert est.backward_transfer.value == pytest.approx(expected.backward_transfer)
    for e in (est.final_average_accuracy, est.average_accuracy_over_time, est.backward_transfer,
              est.average_forgetting, est.forward_transfer, *est.forgetting_per_task, *est.forward_transfer_per_task):
        assert e.low <= e.value <= e.high
        assert e.method == "bootstrap_percentile_paired"
    assert est.final_average_accuracy.n == 240 and est.backward_transfer.n == 160
    assert est.accuracy_matrix[1][0] == wilson_interval(int(np.sum(correct[1][0])), 80)
    assert est.base_accuracy[2] == wilson_interval(int(np.sum(base_correct[2])), 80)
    data = json.loads(json.dumps(est.to_dict(), allow_nan=False))
    assert data["point"]["n_tasks"] == 3
    assert len(data["forgetting_per_task"]) == 2


def test_intervals_are_seeded():
    rng = np.random.default_rng(2)
    correct, base_correct = _simulated_results(rng, R3, BASE3, 40)
    first = continual_metrics_with_intervals(correct, base_correct, n_resamples=300, seed=5)
    again = continual_metrics_with_intervals(correct, base_correct, n_resamples=300, seed=5)
    other = continual_metrics_with_intervals(correct, base_correct, n_resamples=300, seed=6)
    assert first == again
    assert first.backward_transfer != other.backward_transfer


def test_resampling_is_paired_across_steps():
    # Task 0 is answered identically at every step: its forgetting and BWT are exactly 0 in every
    # resample only if the same samples are drawn for every row.
    flags = np.tile([True, False, True, True, False], 20)
    correct = [[flags, None], [flags.copy(), flags.copy()]]
    est = continual_metrics_with_intervals(correct, [flags, flags], n_resamples=300)
    assert (est.backward_transfer.low, est.backward_transfer.high) == (0.0, 0.0)
    assert (est.forgetting_per_task[0].low, est.forgetting_per_task[0].high) == (0.0, 0.0)
    assert est.forward_transfer is None
    assert est.accuracy_matrix[0][1] is None


def test_bwt_interval_coverage_on_simulated_population():
    truth = [[0.85, None], [0.7, 0.8]]
    true_bwt = 0.7 - 0.85
    rng = np.random.default_rng(2025)
    hits = 0
    n_datasets = 200
    for k in range(n_datasets):
        correct, base_correct = _simulated_results(rng, truth, [0.2, 0.3], 150)
        est = continual_metrics_with_intervals(correct, base_correct, n_resamples=500, seed=k)
        hits += est.backward_transfer.contains(true_bwt)
    assert 0.92 <= hits / n_datasets <= 0.98


def test_scores_get_bootstrap_cells():
    scores = np.linspace(0.2, 0.9, 30)
    est = continual_metrics_with_intervals([[scores]], [scores * 0.5], n_resamples=200)
    assert est.accuracy_matrix[0][0].method == "bootstrap_percentile"
    assert est.accuracy_matrix[0][0].value == pytest.approx(scores.mean())
    assert est.backward_transfer is None


@pytest.mark.parametrize(
    "correct,base,message",
    [
        ([[[1, 0]], ], [[1, 0], [1]], "base_correct has 2"),
        ([[[1, 0], None], [None, [1]]], [[1, 0], [1]], r"correct\[1\]\[0\] is missing"),
        ([[[1, 0], None], [[1, 0, 1], [1]]], [[1, 0], [1]], "same samples"),
        ([[[1, 0], None]], [[1, 0]], "has 2 tasks"),
        ([], [], "at least one task"),
    ],
)
def test_malformed_per_sample_results_raise_data_error(correct, base, message):
    with pytest.raises(DataError, match=message):
        continual_metrics_with_intervals(correct, base, n_resamples=10)
