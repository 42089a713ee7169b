"""`unforget study 2x2` end to end on a tiny random LLaVA: base evaluation, two sweep points, replay set, hybrid runs
(mixed by batch), summary and report; a rerun redoes only the run whose DONE was removed."""

import json

import pytest

from tests.strict_json import assert_strict_json
from unforget.cli import main
from unforget.runs import read_jsonl

CONFIG = """name: it
model: {{name: {model}}}
cells:
  id_image_id_text: scenes-vqa?qtypes=colour&n_train=8&n_test=4
  id_image_ood_text: scenes-vqa?qtypes=shape&n_train=1&n_test=4
  ood_image_id_text: easy-vqa?qtypes=colour&n_train=1&n_test=4
  ood_image_ood_text: shapes?n_train=1&n_test=4
train: {{limit: 8, batch_size: 4}}
sweep:
  methods: [{{name: projector, method: projector}}]
  lrs: [1.0e-4, 1.0e-3]
  epochs: [1]
hybrid:
  sources: [{{name: replay, dataset: "scenes-vqa?qtypes=count&n_train=16&n_test=1", replay: true}}]
  ratios: [0.0, 0.5]
  budget: 8
  mix_by: [batch]
eval: {{limit: 4, batch_size: 4, max_new_tokens: 2}}
"""
RUNS = ["sweep/projector-lr0.0001-e1", "sweep/projector-lr0.001-e1", "hybrid/r0", "hybrid/r0.5"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


def test_study_runs_end_to_end_and_resumes_one_run(random_llava_dir, tmp_path):
    config = tmp_path / "2x2.yaml"
    config.write_text(CONFIG.format(model=random_llava_dir))
    out = tmp_path / "run"
    args = ["study", "2x2", "-c", str(config), "--out", str(out)]
    assert main(args) == 0

    cells = json.loads((out / "cells.json").read_text())
    assert all(c["dataset"] == c["ref"] for c in cells.values())  # references with options name their dataset
    for name in ["base", "replay/replay", *RUNS]:
        assert (out / name / "DONE").exists(), name
    assert len(read_jsonl(out / "base" / "samples.jsonl")) == 16  # 4 cells x 4 samples
    replay = read_jsonl(out / "replay" / "replay" / "replay.jsonl")
    assert len(replay) == 4 and all(r["answer"] and (out / "replay" / "replay" / r["image"]).is_file() for r in replay)
    hybrid = json.loads((out / "hybrid" / "r0.5" / "metrics.json").read_text())
    assert sorted(hybrid["train_examples"].values()) == [4, 4]  # budget 8 at r = 0.5
    assert hybrid["interleave_probs"] == [0.5, 0.5] and hybrid["mix_by"] == "batch"

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["study"] == "2x2" and [r["name"] for r in summary["runs"]] == RUNS
    assert all(r["trainable_parameters"] > 0 and r["done"] for r in summary["runs"])
    assert {c["id"] for c in summary["claims"]} >= {"no-ood-image-forgetting", "lower-lr-forgets-less",
                                                    "hybrid-recovers-ood-text"}
    # the judge-free probe: the base model's distributions once, a row for the base and for every run
    assert (out / "probe_base.safetensors").is_file()
    (base_probe,) = read_jsonl(out / "base" / "probe.jsonl")
    assert base_probe["kl"]["value"] == pytest.approx(0.0, abs=1e-6) and base_probe["n"] == 16
    for name in RUNS:
        (row,) = read_jsonl(out / name / "probe.jsonl")
        assert row["epoch"] == 1 and set(row["by_dataset"]) == {c["dataset"] for c in cells.values()}
        assert json.loads((out / name / "metrics.json").read_text())["probe"] == row
    assert [p["name"] for p in summary["probe"]["points"]] == RUNS
    assert summary["probe"]["correlation"]["ood_image"]["n"] == 4
    # a larger learning rate moves the model further from the base (same method, same data)
    kl = {p["name"]: p["kl"] for p in summary["probe"]["points"]}
    assert kl["sweep/projector-lr0.001-e1"] > kl["sweep/projector-lr0.0001-e1"] > 0
    for name in ("report.html", "report.md", "plots/pareto.png", "plots/sweep-forgetting-e1.png",
                 "plots/hybrid.png", "plots/grid-projector.png", "plots/probe.png"):
        assert (out / name).is_file(), name
    # every JSON file the study wrote parses strictly: no bare NaN / Infinity (null instead)
    assert_strict_json(out, at_least=20)

    # remove one sweep run's DONE and answers: the rerun evaluates that run again and touches nothing else
    redo = out / "sweep" / "projector-lr0.001-e1"
    answers = (redo / "samples.jsonl").read_text()
    (redo / "DONE").unlink()
    (redo / "samples.jsonl").unlink()
    kept = [out / "base" / "samples.jsonl", out / "base" / "probe.jsonl", out / "probe_base.safetensors",
             out / "replay" / "replay" / "replay.jsonl"]
    kept += [out / r / f for r in RUNS if out / r != redo
             for f in ("samples.jsonl", "metrics.json", "probe.jsonl", "DONE")]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    assert main(args) == 0
    assert (redo / "DONE").exists()
    assert (redo / "samples.jsonl").read_text() == answers  # greedy answers of the same weights
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps

    # a verdict lost (the judge failed): `unforget eval --rejudge` on the study folder restores it without generating
    target = out / "hybrid" / "r0.5" / "samples.jsonl"
    runs_before = json.loads((out / "metrics.json").read_text())["runs"]
    rows = read_jsonl(target)
    original = [dict(r) for r in rows]
    rows[0].update(correct=None, judgements={"exact": {**rows[0]["judgements"]["exact"], "correct": None}})
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--rejudge", "--out", str(out)]) == 0
    assert read_jsonl(target) == original
    assert json.loads((out / "hybrid" / "r0.5" / "metrics.json").read_text())["rejudge"]["sent"] == {"exact": 1}
    assert json.loads((out / "metrics.json").read_text())["runs"] == runs_before
