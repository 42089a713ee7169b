"""The continual report's bookkeeping on a hand-written run folder: R[i][j] and b[j] from the records, the metrics
against hand-computed values, pairing by sample id, partial runs, the claim against naive, the written page."""

import json

import pytest
import yaml

from unforget.studies.continual import (
    step_folder_name,
    summarise_continual,
    task_labels,
    write_continual_report,
)
from unforget.studies.report import write_run_report

TASKS = ["digits", "shapes?n_test=4"]


def _records(dataset, flags, step):
    return [{"id": f"s{k}", "dataset": dataset, "correct": bool(c), "step": step, "prediction": "x",
             "reference": "y"} for k, c in enumerate(flags)]


def _write(folder, records, done=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (folder / "DONE").write_text("")


def make_run(tmp_path, steps_by_strategy, base, done=None):
    """``steps_by_strategy[name][i][j]``: correctness flags on task j after step i; ``base[j]``: the base model's."""
    run = tmp_path / "run"
    strategies = [{"name": n, "strategy": n, "options": {}} for n in steps_by_strategy]
    (run).mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "t", "tasks": TASKS, "strategies": strategies,
                                                      "alpha": 0.05, "n_resamples": 200,
                                                      "eval": {"split": "test", "limit": 4}}))
    base_records = [r for j, flags in enumerate(base) for r in _records(TASKS[j], flags, -1)]
    _write(run / "base", base_records)
    (run / "base" / "metrics.json").write_text(json.dumps(
        {"tasks": [{"index": j, "ref": ref, "dataset": ref} for j, ref in enumerate(TASKS)]}))
    for name, steps in steps_by_strategy.items():
        for i, row in enumerate(steps):
            records = [r for j, flags in enumerate(row) for r in _records(TASKS[j], flags, i)]
            _write(run / name / step_folder_name(i, TASKS[i]), records, done=(done or {}).get((name, i), True))
    return run


BASE = [[0, 0, 0, 0], [1, 0, 0, 0]]
NAIVE = [[[1, 1, 1, 1], [0, 0, 0, 0]],   # after task 0: digits learnt
         [[0, 0, 1, 0], [1, 1, 1, 1]]]   # after task 1: digits mostly forgotten
KEEPER = [[[1, 1, 1, 1], [0, 1, 0, 0]],
          [[1, 1, 1, 1], [1, 1, 0, 1]]]


def test_matrix_and_metrics_from_the_records(tmp_path):
    summary = summarise_continual(make_run(tmp_path, {"naive": NAIVE, "keeper": KEEPER}, BASE)).to_dict()
    naive, keeper = summary["strategies"]
    assert [[c["value"] for c in row] for row in naive["accuracy_matrix"]] == [[1.0, 0.0], [0.25, 1.0]]
    assert [c["value"] for c in summary["base_accuracy"]] == [0.0, 0.25]
    point = naive["metrics"]["point"]
    assert point["final_average_accuracy"] == pytest.approx((0.25 + 1.0) / 2)
    assert point["backward_transfer"] == pytest.approx(0.25 - 1.0)
    assert point["average_forgetting"] == pytest.approx(0.75)
    assert point["forward_transfer"] == pytest.approx(0.0 - 0.25)
    assert point["average_accuracy_over_time"] == pytest.approx((1.0 + (0.25 + 1.0) / 2) / 2)
    kp = keeper["metrics"]["point"]
    assert kp["backward_transfer"] == 0.0 and kp["forward_transfer"] == pytest.approx(0.0)
    assert naive["aligned_samples"] == [4, 4]
    assert naive["metrics"]["final_average_accuracy"]["low"] <= 0.625 <= naive["metrics"]["final_average_accuracy"]["high"]


def test_claim_compares_per_sample_forgetting_with_naive(tmp_path):
    summary = summarise_continual(make_run(tmp_path, {"naive": NAIVE, "keeper": KEEPER}, BASE)).to_dict()
    (claim,) = summary["claims"]
    assert claim["arm"] == "keeper" and claim["compared_with"] == "naive" and claim["paper_claim"] is False
    test = claim["test"]
    # per-sample forgetting on digits: naive (1,1,0,1), keeper (0,0,0,0) -> difference -0.75
    assert test["delta"]["value"] == pytest.approx(-0.75)
    assert test["delta_of"] == "keeper - naive"
    assert claim["verdict"] in ("held", "not shown")  # 4 samples: the bootstrap may not reach significance
    assert any("digits: mean forgetting naive 0.750, keeper 0.000 (n=4)" in d for d in claim["details"])


def test_unjudged_and_skipped_samples_are_left_out_of_every_cell(tmp_path):
    run = make_run(tmp_path, {"naive": NAIVE}, BASE)
    folder = run / "naive" / step_folder_name(1, TASKS[1])
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    records[0]["correct"] = None  # digits s0 after step 1: a judge failure
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    naive = summarise_continual(run).to_dict()["strategies"][0]
    assert naive["aligned_samples"] == [3, 4]
    assert naive["accuracy_matrix"][1][0]["value"] == pytest.approx(1 / 3)  # s1..s3 after step 1: 0, 1, 0


def test_an_unfinished_strategy_has_rows_so_far_and_no_metrics(tmp_path):
    run = make_run(tmp_path, {"naive": NAIVE, "keeper": KEEPER}, BASE, done={("keeper", 1): False})
    summary = summarise_continual(run).to_dict()
    keeper = summary["strategies"][1]
    assert keeper["done"] is False and keeper["metrics"] is None and keeper["steps_done"] == [0]
    assert keeper["accuracy_matrix"][1] == [None, None]
    assert summary["claims"][0]["verdict"] == "not shown"
    assert any("keeper: steps [1] not finished" in n for n in summary["notes"])


def test_report_files_and_kind_detection(tmp_path):
    run = make_run(tmp_path, {"naive": NAIVE, "keeper": KEEPER}, BASE)
    assert write_run_report(run)[0].name == "continual"  # no run.json: recognised from config.yaml
    files = write_continual_report(run)
    assert {p.name for p in files.plots} == {"continual-metrics.png", "accuracy-matrices.png",
                                              "accuracy-over-time.png"}
    md = files.markdown.read_text()
    assert "| naive | 0.625 [" in md and "Accuracy matrices" in md
    assert json.loads((run / "metrics.json").read_text())["kind"] == "continual"


def test_step_folder_names_and_labels():
    assert step_folder_name(2, "scenes-vqa?qtypes=colour&n_test=5") == "step-2-scenes-vqa-qtypes-colour-n_test-5"
    assert task_labels(["digits", "jsonl:/d/vqa.jsonl", "a?x=1", "a?x=2"]) == ["digits", "vqa.jsonl", "a?x=1",
                                                                                "a?x=2"]
    assert task_labels(["mnist-idx:/a/mnist", "mnist-idx:/b/mnist"]) == ["a/mnist", "b/mnist"]


# ------------------------------------------------------------------------------------------------- probe

HALF = [[[1, 1, 1, 1], [0, 0, 0, 0]],
        [[1, 1, 0, 0], [1, 1, 1, 1]]]


def _probe_row(step, kl_digits, kl_shapes):
    by = {TASKS[0]: {"n": 2, "kl": kl_digits, "label_mass": None, "base_label_mass": None},
          TASKS[1]: {"n": 2, "kl": kl_shapes, "label_mass": None, "base_label_mass": None}}
    return {"step": step, "n": 4, "kl": {"value": (kl_digits + kl_shapes) / 2, "low": 0.0, "high": 9.0, "n": 4},
            "label_mass": None, "base_label_mass": None, "label_set": None, "label_tokens": [], "by_dataset": by}


@pytest.fixture
def probed_run(tmp_path):
    run = make_run(tmp_path, {"naive": NAIVE, "keeper": KEEPER, "half": HALF}, BASE)
    (run / "base" / "probe.jsonl").write_text(json.dumps(_probe_row(-1, 0.0, 0.0)) + "\n")
    # KL on digits after task 1: naive 0.9, keeper 0.5, half 0.4; shapes (the task just trained) is left out
    for name, kl in (("naive", 0.9), ("keeper", 0.5), ("half", 0.4)):
        for i, row in enumerate((_probe_row(0, 0.3, 0.1), _probe_row(1, kl, 5.0))):
            (run / name / step_folder_name(i, TASKS[i]) / "probe.jsonl").write_text(json.dumps(row) + "\n")
    return run


def test_probe_points_and_rank_correlation(probed_run):
    from scipy.stats import spearmanr

    probe = summarise_continual(probed_run).to_dict()["probe"]
    assert [p["step"] for p in probe["curves"]["naive"]] == [0, 1]
    assert probe["curves"]["naive"][1]["kl"] == pytest.approx(2.95)
    points = {p["strategy"]: p for p in probe["points"]}
    assert list(points) == ["naive", "keeper", "half"] and all(p["step"] == 1 for p in points.values())
    assert points["naive"]["kl_earlier"] == pytest.approx(0.9)
    # digits after task 0 -> after task 1: naive 1111 -> 0010, keeper 1111 -> 1111, half 1111 -> 1100
    assert [points[n]["forgetting"] for n in ("naive", "keeper", "half")] == pytest.approx([0.75, 0.0, 0.5])
    # base digits 0000: the drop from the base is minus the accuracy now
    assert [points[n]["drop_from_base"] for n in ("naive", "keeper", "half")] == pytest.approx([-0.25, -1.0, -0.5])
    assert points["naive"]["n"] == 4
    # KL ranks (3, 2, 1), forgetting ranks (3, 1, 2): rho = 1 - 6 * 2 / (3 * 8) = 0.5
    corr = probe["correlation"]["forgetting"]
    assert corr["rho"] == pytest.approx(0.5) and corr["n"] == 3
    assert corr["p_value"] == pytest.approx(spearmanr([0.9, 0.5, 0.4], [0.75, 0.0, 0.5]).pvalue)
    assert probe["correlation"]["drop_from_base"]["rho"] == pytest.approx(0.5)


def test_probe_section_on_the_page(probed_run):
    files = write_continual_report(probed_run)
    assert "probe.png" in [p.name for p in files.plots]
    md = files.markdown.read_text()
    assert "Judge-free forgetting probe" in md and "over 3 (strategy, step) points: rho = 0.500" in md


def test_no_probe_rows_no_section(tmp_path):
    summary = summarise_continual(make_run(tmp_path, {"naive": NAIVE}, BASE)).to_dict()
    assert summary["probe"] is None
