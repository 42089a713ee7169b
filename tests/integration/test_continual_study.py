"""`unforget study continual` end to end on a tiny random LLaVA: 2 tasks, a handful of samples, 2 strategies (naive
and model-tailor). Checks the run folder, R against the judged records, the metrics against R, and resume: a step
whose DONE is gone is finished without retraining, and one whose results are gone is redone to the same weights."""

import json

import numpy as np
import pytest
import yaml

from unforget.cli import main
from unforget.studies.continual import step_folder_name
from unforget.runs import read_jsonl
from unforget.studies.continual.metrics import continual_metrics

TASKS = ["digits", "shapes?n_train=16&n_test=6"]
STRATEGIES = ["naive", "model-tailor"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


@pytest.fixture(scope="module")
def study(random_llava_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("continual")
    config = {
        "name": "it", "model": {"name": str(random_llava_dir), "device": "cpu"}, "tasks": TASKS,
        "train": {"method": "lora", "method_options": {"r": 4}, "lr": 1e-2, "limit": 8, "batch_size": 4},
        "strategies": [{"name": "naive", "strategy": "naive"},
                       {"name": "model-tailor", "strategy": "model-tailor",
                        "options": {"sparsity": 0.2, "calib_samples": 4, "calib_batch_size": 2}}],
        "eval": {"limit": 5, "batch_size": 8, "max_new_tokens": 3}, "n_resamples": 200, "probe": {"limit": 8},
    }
    path = folder / "continual.yaml"
    path.write_text(yaml.safe_dump(config))
    out = folder / "run"
    assert main(["study", "continual", "--config", str(path), "--out", str(out)]) == 0
    return path, out


def steps(out, strategy):
    return [out / strategy / step_folder_name(i, t) for i, t in enumerate(TASKS)]


def accuracy(records, dataset):
    flags = [r["correct"] for r in records if r["dataset"] == dataset]
    assert len(flags) == 5
    return sum(flags) / len(flags)


def test_run_folder_layout(study):
    _, out = study
    for name in ("config.yaml", "base/DONE", "base/samples.jsonl", "metrics.json", "report.html", "report.md",
                 "plots/accuracy-matrices.png", "plots/accuracy-over-time.png"):
        assert (out / name).is_file(), name
    for strategy in STRATEGIES:
        for folder in steps(out, strategy):
            for name in ("DONE", "weights.safetensors", "samples.jsonl", "metrics.json", "train_result.json",
                         "train/DONE", "probe.jsonl"):
                assert (folder / name).is_file(), f"{folder}/{name}"
    graft = json.loads((steps(out, "model-tailor")[1] / "model-tailor.json").read_text())
    assert graft["changed_fraction"] == pytest.approx(0.2, abs=1e-3)
    assert (out / "report.md").read_text().count("| naive |") >= 2


def test_probe_after_every_step(study):
    _, out = study
    assert (out / "probe_base.safetensors").is_file()
    (base,) = read_jsonl(out / "base" / "probe.jsonl")
    assert base["step"] == -1 and base["kl"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert base["n"] == 8 + 6  # the first probe.limit = 8 of each test split; shapes has 6
    for strategy in STRATEGIES:
        rows = [read_jsonl(folder / "probe.jsonl") for folder in steps(out, strategy)]
        assert [[r["step"] for r in rs] for rs in rows] == [[0], [1]]
        assert all(rs[0]["kl"]["value"] > 0 for rs in rows)  # fine-tuning moved the answer distribution
    summary = json.loads((out / "metrics.json").read_text())
    points = summary["probe"]["points"]
    assert [(p["strategy"], p["step"]) for p in points] == [("naive", 1), ("model-tailor", 1)]
    assert all(p["n"] == 5 for p in points)  # digits, judged after step 0 and step 1
    why = summary["probe"]["correlation"]["forgetting"]["why_none"]
    assert why == "needs at least 3 (strategy, step) points, has 2"


def test_accuracy_matrix_matches_the_records(study):
    _, out = study
    summary = json.loads((out / "metrics.json").read_text())
    names = [t["dataset"] for t in summary["tasks"]]
    assert names == ["digits", TASKS[1]]
    base = read_jsonl(out / "base" / "samples.jsonl")
    b = [accuracy(base, n) for n in names]
    assert [c["value"] for c in summary["base_accuracy"]] == pytest.approx(b)
    for entry, strategy in zip(summary["strategies"], STRATEGIES):
        matrix = entry["accuracy_matrix"]
        assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
        expected = [[accuracy(read_jsonl(folder / "samples.jsonl"), n) for n in names]
                    for folder in steps(out, strategy)]
        assert np.allclose([[c["value"] for c in row] for row in matrix], expected)
        point = continual_metrics(np.array(expected), b)
        assert entry["metrics"]["point"]["backward_transfer"] == pytest.approx(point.backward_transfer)
        assert entry["metrics"]["point"]["final_average_accuracy"] == pytest.approx(point.final_average_accuracy)
    (claim,) = summary["claims"]
    assert claim["arm"] == "model-tailor" and claim["verdict"] in ("held", "not held", "not shown")


def test_model_tailor_grafts_a_sparse_part_of_what_naive_changes(study, random_llava_dir):
    from safetensors.torch import load_file

    from unforget.models.loading import load_model

    _, out = study
    base = load_model(str(random_llava_dir), device="cpu").model.state_dict()

    def differing(folder):
        tensors = load_file(str(folder / "weights.safetensors"))
        return sum(int((v != base[k]).sum()) for k, v in tensors.items())

    naive, tailored = differing(steps(out, "naive")[0]), differing(steps(out, "model-tailor")[0])
    assert naive > 0 and 0 < tailored < 0.5 * naive  # a 20% patch of the merged LoRA layers


def test_rerun_finishes_a_step_without_done_and_redoes_a_lost_step_bit_identically(study):
    config, out = study
    naive_last = steps(out, "naive")[-1]
    tailor_last = steps(out, "model-tailor")[-1]
    naive_weights = (naive_last / "weights.safetensors").read_bytes()
    naive_log = (naive_last / "train" / "train_log.jsonl").read_text()
    samples = (naive_last / "samples.jsonl").read_text()
    tailor_weights = (tailor_last / "weights.safetensors").read_bytes()
    before = json.loads((out / "metrics.json").read_text())

    (naive_last / "DONE").unlink()
    for name in ("DONE", "weights.safetensors", "samples.jsonl", "metrics.json"):
        (tailor_last / name).unlink()
    assert main(["study", "continual", "--config", str(config), "--out", str(out)]) == 0

    assert (naive_last / "DONE").is_file() and (tailor_last / "DONE").is_file()
    assert (naive_last / "weights.safetensors").read_bytes() == naive_weights
    assert (naive_last / "train" / "train_log.jsonl").read_text() == naive_log  # not trained again
    assert (naive_last / "samples.jsonl").read_text() == samples  # every sample was there: none judged again
    assert (tailor_last / "weights.safetensors").read_bytes() == tailor_weights  # grafted again, same values
    after = json.loads((out / "metrics.json").read_text())
    for a, b in zip(before["strategies"], after["strategies"]):
        assert a["metrics"] == b["metrics"]
    assert before["claims"] == after["claims"]
