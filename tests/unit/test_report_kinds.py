"""`unforget report DIR` on a folder of every kind unforget writes, the kind read from run.json.

Each folder is hand-written (no model, no training) in the layout its writer uses. A folder without run.json falls
back to guessing from config.yaml, which is what failed on a Model Tailor study ("several run kinds"); with run.json
there is no guessing: study sub-runs without a config.yaml of their own, judge validations, and folders whose
config.yaml matches several kinds all get their report. Two datasets that share a last folder name get distinct
labels in tables and plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.synthetic_emt_run import make_run as make_emt_run
from unforget.cli import main
from unforget.errors import DataError
from unforget.studies.report import detect_report_kind, guess_report_kind
from unforget.runs.manifest import new_manifest, read_manifest, write_manifest

A_MNIST, B_MNIST = "mnist-idx:/data/a/mnist", "mnist-idx:/data/b/mnist"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ helpers


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def mark(folder: Path, kind: str, parent: str | None = None) -> Path:
    write_manifest(folder, new_manifest(kind, {}, parent=parent))
    return folder


def report(folder: Path, capsys, *extra: str) -> str:
    """`unforget report DIR` through the CLI; the markdown it wrote."""
    assert main(["report", str(folder), *extra]) == 0, capsys.readouterr().out
    assert (folder / "report.html").is_file()
    return (folder / "report.md").read_text()


def classification(dataset: str, n: int, correct: set[int], **tags) -> list[dict]:
    return [{"id": f"{i}", "dataset": dataset, "correct": i in correct, "prediction": "x" if i in correct else None,
             "reference": "x", **tags} for i in range(n)]


@pytest.fixture()
def plotted(monkeypatch) -> dict[str, list[str]]:
    """Every panel title, series label and bar category the report modules plot, by kind of text."""
    from unforget.reports import plots

    seen: dict[str, list[str]] = {"titles": [], "series": [], "categories": []}
    line_plot, bar_chart = plots.line_plot, plots.bar_chart

    def recording_line_plot(panels, **kwargs):
        seen["titles"] += [p.title for p in panels]
        seen["series"] += [s.label for p in panels for s in p.series]
        return line_plot(panels, **kwargs)

    def recording_bar_chart(categories, series, **kwargs):
        seen["categories"] += list(categories)
        seen["series"] += [s.label for s in series]
        return bar_chart(categories, series, **kwargs)

    import unforget.studies.continual.page as continual_page
    import unforget.studies.emt.page as emt_page
    import unforget.reports.eval_run as eval_run
    import unforget.reports.finetune as finetune
    import unforget.studies.survey.page as survey
    import unforget.studies.tailor.page as tailor

    for module in (emt_page, continual_page, finetune, tailor):
        monkeypatch.setattr(module, "line_plot", recording_line_plot)
    for module in (eval_run, survey):
        monkeypatch.setattr(module, "bar_chart", recording_bar_chart)
    return seen


# ------------------------------------------------------------------------------------------------ eval

EVAL_DATASET = {"n": 4, "accuracy": 0.5, "accuracy_low": 0.15, "accuracy_high": 0.85, "per_class": {"1": 1.0},
                "confusion": {"1": {"1": 2}, "2": {"<none>": 2}}, "no_class_rate": 0.5, "top1_share": 1.0,
                "normalised_entropy": 0.0, "leak_rates": {}, "baselines": {}}


def test_eval_run_with_two_sets_of_one_folder_name(tmp_path, capsys, plotted):
    run = mark(tmp_path / "eval", "eval")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "m"}, "datasets": [A_MNIST, B_MNIST],
                                                     "split": "test", "mode": "generate"}))
    write_json(run / "metrics.json", {"datasets": {A_MNIST: EVAL_DATASET, B_MNIST: {**EVAL_DATASET, "accuracy": 0.25}}})
    text = report(run, capsys)
    assert text.startswith("# Evaluation: m")
    assert "| a/mnist | 4 | 0.500 [0.150, 0.850]" in text and "| b/mnist | 4 | 0.250" in text
    assert plotted["categories"] == ["a/mnist", "b/mnist"]
    assert "a/mnist = mnist-idx:/data/a/mnist" in text  # the facts spell the label out once
    assert {p.name for p in (run / "plots").iterdir()} == {"accuracy.png", "confusion-mnist-idx-data-a-mnist.png",
                                                           "confusion-mnist-idx-data-b-mnist.png"}


def test_a_study_evaluation_without_config_yaml_is_reported_from_run_json(tmp_path, capsys):
    base = tmp_path / "study" / "base"
    write_json(base / "metrics.json", {"epoch": 0, "datasets": {"digits": EVAL_DATASET}})
    with pytest.raises(DataError, match="no run.json and no config.yaml"):
        detect_report_kind(base)
    mark(base, "eval", parent="emt")
    text = report(base, capsys)
    assert "# Evaluation: base" in text and "the emt study in" in text and "| digits | 4 |" in text


# -------------------------------------------------------------------------------------------- finetune

FINETUNE_CONFIG = {"model": {"name": "tiny-llava"}, "data": {"datasets": [A_MNIST, B_MNIST], "split": "train",
                                                                "limit": 8},
                   "method": "lora", "method_options": {"r": 4}, "lr": 0.001, "epochs": 2, "batch_size": 4,
                   "grad_accum": 1, "seed": 0}


def write_training_folder(folder: Path, steps: int = 4, finished: bool = True) -> None:
    (folder / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(FINETUNE_CONFIG))
    write_jsonl(folder / "train_log.jsonl", [{"step": s, "epoch": s / 2, "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0,
                                              "seconds": 0.1} for s in range(1, steps + 1)])
    for epoch in (1, 2):
        write_json(folder / "checkpoints" / f"epoch-{epoch}" / "trainer_state.json", {
            "method": "lora", "kind": "epoch", "global_step": 2 * epoch, "epochs_done": epoch, "step_in_epoch": 0,
            "steps_per_epoch": 2, "total_steps": 4, "num_processes": 1, "base_model": "m", "loss": 1.0 / epoch,
            "epoch_end_done": True})
    (folder / "checkpoints" / ".tmp-epoch-3").mkdir()  # an interrupted save: not a checkpoint
    if finished:
        write_json(folder / "metrics.json", {"config": FINETUNE_CONFIG, "method": "lora", "global_step": steps,
                                             "epochs_done": 2, "trainable_parameters": 10, "total_parameters": 1000,
                                             "losses": [2.0 / s for s in range(1, steps + 1)], "seconds": 3.5,
                                             "final_loss": 2.0 / steps, "num_processes": 1,
                                             "mixed_precision": "no"})
        (folder / "DONE").write_text("")


def test_finetune_run(tmp_path, capsys, plotted):
    run = tmp_path / "ft"
    write_training_folder(run)
    mark(run, "finetune")
    text = report(run, capsys)
    assert text.startswith("# Fine-tuning: lora on a/mnist, b/mnist")
    assert "| epoch-1 | epoch | 2 | 1 | 1.0000 |" in text and "| epoch-2 | epoch | 4 | 2 | 0.5000 |" in text
    assert ".tmp-epoch-3" not in text
    assert "10 of 1,000 (1.00%)" in text and "2.0000 / 0.5000" in text and "finished" in text
    assert "holds no evaluation" in text
    assert (run / "plots" / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert plotted["series"] == ["loss per step", "learning rate"]


def test_an_unfinished_finetune_run_reports_what_it_has(tmp_path, capsys):
    run = mark(tmp_path / "ft", "finetune")
    write_training_folder(run, steps=3, finished=False)
    text = report(run, capsys)
    assert "unfinished" in text and "| optimizer steps | 3 |" in text


def test_a_study_arm_is_reported_with_its_evaluations_per_epoch_and_its_training(tmp_path, capsys, plotted):
    """An EMT arm folder (run.json: an eval sub-run of the study): samples.jsonl tagged with the epoch beside the
    training folder train/; no config.yaml of its own."""
    study = mark(make_emt_run(tmp_path / "emt"), "emt")
    arm = study / "lora"
    with pytest.raises(DataError, match="no run.json and no config.yaml"):
        detect_report_kind(arm)
    mark(arm, "eval", parent="emt")
    text = report(arm, capsys)
    assert "the emt study in" in text and "## Every evaluation in this folder" in text
    # lora epoch 1: digits 15/20, shapes 19/21 (s20 counted); epoch 2: digits 20/20
    assert "| 1 | digits | 20 | 0.750" in text and "| 2 | digits | 20 | 1.000" in text
    assert "| 1 | shapes | 21 | 0.905" in text
    assert "## Training" in text and "| trainable parameters | 10 of 100 (10.00%) |" in text
    assert {"loss.png", "accuracy-per-point.png"} <= {p.name for p in (arm / "plots").iterdir()}
    assert set(plotted["series"]) >= {"digits", "shapes", "loss per step"}
    # its training folder, and the arm read as a fine-tuning run: the same records under "during training"
    train = report(mark(arm / "train", "finetune", parent="emt"), capsys)
    assert train.startswith("# Fine-tuning:") and "| optimizer steps | 4 |" in train
    assert f"the emt study in {study}`" in train
    mark(arm, "finetune", parent="emt")
    text = report(arm, capsys)
    assert "## Evaluation during training" in text and "| 2 | digits | 20 | 1.000" in text


# ------------------------------------------------------------------------------------------------- emt


def rename_datasets(root: Path, mapping: dict[str, str]) -> None:
    """Every dataset name in a hand-written run folder replaced (keys and values of the JSON files, config.yaml)."""

    def swap(obj):
        if isinstance(obj, dict):
            return {mapping.get(k, k): swap(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [swap(v) for v in obj]
        return mapping.get(obj, obj) if isinstance(obj, str) else obj

    for path in root.rglob("*"):
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(swap(json.loads(line))) + "\n"
                                    for line in path.read_text().splitlines()))
        elif path.suffix == ".json":
            path.write_text(json.dumps(swap(json.loads(path.read_text()))))
        elif path.name == "config.yaml":
            path.write_text(yaml.safe_dump(swap(yaml.safe_load(path.read_text()))))


def test_emt_study_with_two_sets_of_one_folder_name(tmp_path, capsys, plotted):
    run = make_emt_run(tmp_path / "emt")
    rename_datasets(run, {"digits": A_MNIST, "shapes": B_MNIST})
    mark(run, "emt")
    text = report(run, capsys)
    assert text.startswith("# EMT study: synthetic")
    assert "a/mnist (fine-tuning set)" in plotted["titles"] and "b/mnist" in plotted["titles"]
    assert "| b/mnist | lora |" in text and "| mnist |" not in text
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["fine_tuning_set"] == A_MNIST  # the summary keeps the references; only the page shortens them
    leak = next(c for c in summary["claims"] if c["id"] == "fine-tuning-labels-leak")
    assert "a/mnist labels" in leak["claim"]


# ------------------------------------------------------------------------------------------------- 2x2

TWOBYTWO_CONFIG = {"name": "synthetic", "model": {"name": "m"},
                   "cells": {"id_image_id_text": "T", "id_image_ood_text": "IO", "ood_image_id_text": "OI",
                             "ood_image_ood_text": "OO"},
                   "train": {"limit": 8},
                   "sweep": {"methods": [{"name": "projector", "method": "projector"}], "lrs": [0.001],
                             "epochs": [1]},
                   "eval": {"limit": 8}, "alpha": 0.05, "margin": 0.1}


def test_twobytwo_study(tmp_path, capsys):
    run = tmp_path / "2x2"
    (run / "base").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(TWOBYTWO_CONFIG))
    cells = ("T", "IO", "OI", "OO")
    write_jsonl(run / "base" / "samples.jsonl", [r for c in cells for r in classification(c, 8, {0, 1}, epoch=0)])
    (run / "base" / "DONE").write_text("")
    sub = run / "sweep" / "projector-lr0.001-e1"
    write_jsonl(sub / "samples.jsonl", [r for c in cells for r in classification(c, 8, set(range(6)), epoch=1)])
    write_json(sub / "spec.json", {"name": "sweep/projector-lr0.001-e1", "kind": "sweep",
                                   "method": {"name": "projector", "method": "projector"}, "lr": 0.001, "epochs": 1})
    write_json(sub / "metrics.json", {"trainable_parameters": 10, "total_parameters": 100})
    write_training_folder(sub / "train")
    (sub / "DONE").write_text("")
    mark(run, "2x2")
    assert report(run, capsys).startswith("# 2x2 study")
    # a sweep run: an evaluation sub-run of the study, with its metrics and its training folder
    write_json(sub / "metrics.json", {"trainable_parameters": 10, "total_parameters": 100,
                                      "eval": {"datasets": {c: {**EVAL_DATASET, "n": 8, "accuracy": 0.75}
                                                            for c in cells}}})
    mark(sub, "eval", parent="2x2")
    text = report(sub, capsys)
    assert "| T | 8 | 0.750 [" in text and "## Training" in text and "## Checkpoints" in text
    assert f"the 2x2 study in {run}`" in text


# ------------------------------------------------------------------------------------------- continual


def test_continual_study_with_two_tasks_of_one_folder_name(tmp_path, capsys, plotted):
    run = tmp_path / "continual"
    tasks = [A_MNIST, B_MNIST]
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": "t", "tasks": tasks, "strategies": [{"name": "naive", "strategy": "naive", "options": {}}],
        "alpha": 0.05, "n_resamples": 50, "eval": {"split": "test", "limit": 4}}))
    write_jsonl(run / "base" / "samples.jsonl", [r for t in tasks for r in classification(t, 4, {0}, step=-1)])
    write_json(run / "base" / "metrics.json", {"tasks": [{"index": j, "ref": t, "dataset": t}
                                                         for j, t in enumerate(tasks)]})
    (run / "base" / "DONE").write_text("")
    from unforget.studies.continual import step_folder_name

    for i, task in enumerate(tasks):
        folder = run / "naive" / step_folder_name(i, task)
        write_jsonl(folder / "samples.jsonl", [r for t in tasks for r in classification(t, 4, {0, 1, 2}, step=i)])
        (folder / "DONE").write_text("")
    mark(run, "continual")
    text = report(run, capsys)
    assert text.startswith("# Continual")
    assert "a/mnist -> b/mnist" in text
    assert any(t.startswith("a/mnist") for t in plotted["titles"]) and any(t.startswith("b/mnist")
                                                                           for t in plotted["titles"])


# ------------------------------------------------------------------------------------ tailor study (the bug)

TAILOR_STUDY_CONFIG = {
    "name": "synthetic", "model": {"name": "m"}, "original": [A_MNIST, B_MNIST],
    "targets": [{"name": "vqa", "dataset": "scenes-vqa"}],
    # the study's own config has train / methods / eval and the folder a base/: EMT's guess matches it too
    "train": {"method": "lora", "epochs": 1}, "sparsities": [0.1],
    "methods": [{"name": "model-tailor", "method": "model-tailor"}], "single_task": True, "multi_task": False,
    "eval": {"split": "test", "limit": 8, "mode": "generate"}, "headline": {"sparsity": 0.1, "keep": 0.99,
                                                                           "reach": 0.97},
    "alpha": 0.05}


def make_tailor_study(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(TAILOR_STUDY_CONFIG))

    def rows(a: set[int], b: set[int], target: set[int]) -> list[dict]:
        return (classification(A_MNIST, 8, a) + classification(B_MNIST, 8, b)
                + classification("scenes-vqa", 8, target))

    write_jsonl(root / "base" / "samples.jsonl", rows(set(range(8)), set(range(4)), {0}))
    write_jsonl(root / "finetune" / "vqa" / "samples.jsonl", rows(set(range(4)), set(range(4)), set(range(8))))
    sub = root / "vqa" / "model-tailor-10pct"
    write_jsonl(sub / "samples.jsonl", rows(set(range(8)), set(range(4)), set(range(8))))
    write_json(sub / "spec.json", {"group": "vqa", "targets": ["vqa"], "name": "model-tailor",
                                   "method": "model-tailor", "sparsity": 0.1, "options": {}})
    write_json(sub / "tailor.json", {"changed_fraction": 0.1, "options": {}, "seconds": {"calibrate": 1.0}})
    for folder in (root / "base", root / "finetune" / "vqa", sub):
        (folder / "DONE").write_text("")
    return root


def test_tailor_study_folder_is_reported_without_kind(tmp_path, capsys, plotted):
    """The bug: `unforget report` on a Model Tailor study folder failed with "several run kinds"."""
    run = make_tailor_study(tmp_path / "tailor")
    with pytest.raises(DataError, match="several run kinds"):
        guess_report_kind(run)  # what config.yaml alone says: emt and tailor-study both match
    mark(run, "tailor-study")
    assert detect_report_kind(run).name == "tailor-study"
    text = report(run, capsys)
    assert text.startswith("# Model Tailor study: synthetic")
    assert "**original tasks**: `a/mnist, b/mnist`" in text
    assert "(% of fine-tuned) | a/mnist | b/mnist | scenes-vqa |" in text
    assert "  - a/mnist: 1.000 [1.000, 1.000]" in text  # the headline's details
    assert json.loads((run / "metrics.json").read_text())["groups"]["vqa"]["runs"][0]["done"]


# ------------------------------------------------------------------------------------- tailor (the verb)


def test_tailor_run(tmp_path, capsys):
    run = tmp_path / "tailored"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"base": "/models/base", "finetuned": ["/runs/ft/a"],
                                                     "method": "model-tailor", "sparsity": 0.1, "format": "patch"}))
    tensors = {}
    for layer in range(3):
        for proj in ("q_proj", "v_proj"):
            tensors[f"model.layers.{layer}.self_attn.{proj}.weight"] = {
                "key": f"model.layers.{layer}.self_attn.{proj}.weight", "numel": 100, "changed": 10 * (layer + 1),
                "per_task": [10 * (layer + 1)], "overlap": 0, "error_before": [0.5], "error_after": [0.25],
                "kept_fraction": 0.1}
    tensors["multi_modal_projector.linear_1.weight"] = {"numel": 50, "changed": 5, "per_task": [5], "overlap": 0,
                                                        "error_before": [None], "error_after": [None]}
    write_json(run / "metrics.json", {
        "base": "/models/base", "finetuned": ["/runs/ft/a/checkpoints/epoch-1"], "calibration": ["digits"],
        "format": "patch", "model": str(run / "patch.safetensors"), "method": "model-tailor",
        "options": {"sparsity": 0.1, "fusion": 0.5, "compensate": True}, "considered": 650, "changed": 125,
        "changed_fraction": 125 / 650, "base_fingerprint": "abc", "seconds": {"calibrate": 1.0, "score": 0.5},
        "tensors": tensors})
    mark(run, "tailor")
    text = report(run, capsys)
    assert text.startswith("# Tailoring: model-tailor at 10%")
    assert "125 of 650 considered entries (19.2308%)" in text
    assert "| model.layers.\\*.self_attn.q_proj.weight | 3 | 300 | 60 | 20.00% | 0 | 0.5000 | 0.2500 |" in text
    assert "| multi_modal_projector.linear_1.weight | 1 | 50 | 5 | 10.00% | 0 | - | - |" in text
    assert "| fusion | 0.5 |" in text
    assert (run / "plots" / "changed-per-layer.png").read_bytes().startswith(PNG_MAGIC)


# -------------------------------------------------------------------------------------------------- survey


def test_survey_with_two_sets_of_one_folder_name(tmp_path, capsys, plotted):
    run = tmp_path / "survey"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "s", "models": ["tiny-llava"],
                                                     "datasets": [A_MNIST, B_MNIST], "eval": {"limit": 4}}))
    cell = {"accuracy": 0.5, "low": 0.2, "high": 0.8}
    write_json(run / "metrics.json", {"models": ["tiny-llava"], "datasets": [A_MNIST, B_MNIST], "rows": [
        {"model": "tiny-llava", "dataset": d, "n": 4, "mllm": cell, "linear-probe": cell} for d in (A_MNIST, B_MNIST)]})
    mark(run, "survey")
    text = report(run, capsys)
    assert "| tiny-llava | a/mnist | 4 |" in text and "| tiny-llava | b/mnist | 4 |" in text
    assert plotted["categories"] == ["a/mnist", "b/mnist"]


# ------------------------------------------------------------------------------------------ judge validate


def test_judge_validation_from_the_cli(tmp_path, capsys):
    out = tmp_path / "judges"
    assert main(["judge", "validate", "--gold", "digits", "--judges", "exact", "--resamples", "50",
                 "--out", str(out)]) == 0
    if read_manifest(out) is None:  # folders written before run.json: the fallback recognises them
        assert detect_report_kind(out).name == "judge-validate"
        mark(out, "judge-validate")
    text = report(out, capsys)
    assert text.startswith("# Judge validation: gold-digits.jsonl")
    doc = json.loads((out / "metrics.json").read_text())
    exact = doc["judges"]["exact"]
    assert f"| exact | {exact['judged']} of {exact['n']} |" in text
    assert (out / "plots" / "judges.png").read_bytes().startswith(PNG_MAGIC)


def test_judge_validation_with_an_undefined_kappa(tmp_path, capsys):
    run = mark(tmp_path / "judges", "judge-validate")
    accuracy = {"value": 1.0, "low": 0.6, "high": 1.0, "n": 6, "method": "wilson", "confidence": 0.95}
    write_json(run / "metrics.json", {
        "config": {"gold": "g.jsonl", "judges": ["exact"]}, "gold": "g.jsonl", "n": 6,
        "datasets": {A_MNIST: 3, B_MNIST: 3}, "human_correct": 6, "confidence": 0.95, "unavailable": {"llm": "no url"},
        "judges": {"exact": {"judge": "exact", "n": 6, "judged": 6, "unjudged": 0, "accuracy": accuracy,
                             "kappa": {**accuracy, "value": None, "low": None, "high": None},
                             "false_accepts": 0, "false_rejects": 0,
                             "by_dataset": {A_MNIST: accuracy, B_MNIST: accuracy}, "disagreements": []}}})
    text = report(run, capsys)
    assert "| exact | 6 of 6 | 1.000 [0.600, 1.000] | - |" in text
    assert "| judge | a/mnist | b/mnist |" in text and "llm: not available here (no url)" in text


# ------------------------------------------------------------------------------------------- the manifest


def test_run_json_decides_over_config_yaml_and_kind_overrides_both(tmp_path, capsys):
    run = make_emt_run(tmp_path / "emt")
    assert guess_report_kind(run).name == "emt"
    mark(run, "tailor-study")  # run.json is the folder's word, even against what config.yaml looks like
    assert detect_report_kind(run).name == "tailor-study"
    assert report(run, capsys, "--kind", "emt").startswith("# EMT study")


def test_a_kind_without_a_report_is_named(tmp_path):
    run = mark(tmp_path / "x", "emtt")
    with pytest.raises(DataError, match="'emtt', which has no report. Did you mean 'emt'"):
        detect_report_kind(run)


def test_every_kind_run_json_records_has_one_report():
    from unforget.studies.report import report_writers

    assert sorted(report_writers()) == sorted(["eval", "finetune", "emt", "2x2", "continual", "survey", "tailor-study",
                                      "tailor", "judge-validate", "harness-compare"])
