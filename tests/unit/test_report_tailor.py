"""The tailor study's summary and report on a hand-written run folder: retention and reach worked out by hand,
headline verdicts, caption targets scored by CIDEr-D, unfinished runs listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unforget.studies.report import detect_report_kind
from unforget.studies.tailor import at_least, summarise_tailor, write_tailor_report

CONFIG = """name: synthetic
model: {name: tiny-test-model}
original: [shapes, digits]
targets:
  - {name: vqa, dataset: scenes-vqa}
  - {name: caption, dataset: scenes-caption}
sparsities: [0.05, 0.1]
methods:
  - {name: model-tailor, method: model-tailor}
  - {name: average, method: average}
single_task: true
multi_task: false
eval: {split: test, limit: 20, mode: generate}
headline: {sparsity: 0.1, keep: 0.99, reach: 0.97}
alpha: 0.05
"""
CAPTIONS = [["a red circle in the top left corner", "a red circle at the top left"],
            ["a blue square to the left of a green star", "a green star to the right of a blue square"],
            ["a yellow heart above a purple cross"], ["an orange star in the bottom right corner"]]


def cls(dataset: str, n: int, correct: set[int]) -> list[dict]:
    return [{"id": f"{dataset}-{i}", "dataset": dataset, "correct": i in correct, "prediction": "x",
             "reference": "x"} for i in range(n)]


def cap(answers: list[str]) -> list[dict]:
    return [{"id": f"c{i}", "dataset": "scenes-caption", "task": "caption", "answer": a, "reference": refs[0],
             "references": refs} for i, (a, refs) in enumerate(zip(answers, CAPTIONS))]


def write(folder: Path, rows: list[dict], done: bool = True, **files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, doc in files.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))
    if done:
        (folder / "DONE").write_text("")


def spec(group: str, name: str, method: str, sparsity: float | None) -> dict:
    return {"group": group, "targets": [group], "name": name, "method": method, "sparsity": sparsity, "options": {}}


def tailor_json(fraction: float) -> dict:
    return {"changed_fraction": fraction, "options": {}, "seconds": {"calibrate": 1.0, "score": 0.5}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tailor") / "run"
    root.mkdir()
    (root / "config.yaml").write_text(CONFIG)
    exact = [refs[0] for refs in CAPTIONS]
    # base: shapes 20/20, digits 10/20 (ids 0-9); scenes-vqa 4/20; captions: nothing right
    write(root / "base", cls("shapes", 20, set(range(20))) + cls("digits", 20, set(range(10)))
          + cls("scenes-vqa", 20, set(range(4))) + cap(["zebra"] * 4))
    # fine-tuned on vqa: 20/20 on the target, shapes falls to 10/20
    write(root / "finetune" / "vqa", cls("shapes", 20, set(range(10))) + cls("digits", 20, set(range(10)))
          + cls("scenes-vqa", 20, set(range(20))))
    write(root / "finetune" / "caption", cls("shapes", 20, set(range(20))) + cls("digits", 20, set(range(10)))
          + cap(exact))
    # model-tailor 10%: originals untouched, vqa 20/20            -> retention 1, reach 1
    write(root / "vqa" / "model-tailor-10pct", cls("shapes", 20, set(range(20))) + cls("digits", 20, set(range(10)))
          + cls("scenes-vqa", 20, set(range(20))), spec=spec("vqa", "model-tailor", "model-tailor", 0.1),
          tailor=tailor_json(0.1))
    # model-tailor 5%: shapes 10/20 (0.5), digits 10/20 (1.0)     -> pooled (20*0.5 + 20*1)/40 = 0.75; vqa 10/20
    write(root / "vqa" / "model-tailor-5pct", cls("shapes", 20, set(range(10))) + cls("digits", 20, set(range(10)))
          + cls("scenes-vqa", 20, set(range(10))), spec=spec("vqa", "model-tailor", "model-tailor", 0.05),
          tailor=tailor_json(0.05))
    # average: shapes 5/20, digits 5/20 (ids 0-4)                 -> (20*0.25 + 20*0.5)/40 = 0.375; vqa 20/20
    write(root / "vqa" / "average", cls("shapes", 20, set(range(5))) + cls("digits", 20, set(range(5)))
          + cls("scenes-vqa", 20, set(range(20))), spec=spec("vqa", "average", "average", None),
          tailor=tailor_json(0.9))
    # caption target, model-tailor 10%: the first two captions exact, the others wrong; unfinished
    write(root / "caption" / "model-tailor-10pct", cls("shapes", 20, set(range(20))) + cls("digits", 20, set(range(10)))
          + cap(exact[:2] + ["zebra", "zebra"]), done=False,
          spec=spec("caption", "model-tailor", "model-tailor", 0.1), tailor=tailor_json(0.1))
    return root


def rows(summary: dict, group: str) -> dict[str, dict]:
    return {r["folder"]: r for r in summary["groups"][group]["runs"]}


def test_retention_and_reach_are_worked_out_per_dataset_and_pooled(run):
    summary = summarise_tailor(run).to_dict()
    vqa = rows(summary, "vqa")
    assert list(vqa) == ["model-tailor-5pct", "model-tailor-10pct", "average"]  # config order, then sparsity
    assert vqa["model-tailor-10pct"]["retention"]["pooled"]["value"] == pytest.approx(1.0)
    assert vqa["model-tailor-10pct"]["reach"]["pooled"]["value"] == pytest.approx(1.0)
    five = vqa["model-tailor-5pct"]
    assert five["retention"]["per_dataset"]["shapes"]["value"] == pytest.approx(0.5)
    assert five["retention"]["per_dataset"]["digits"]["value"] == pytest.approx(1.0)
    assert five["retention"]["pooled"]["value"] == pytest.approx(0.75)
    assert five["reach"]["pooled"]["value"] == pytest.approx(0.5)
    assert five["retention"]["pooled"]["low"] < 0.75 < five["retention"]["pooled"]["high"]
    assert vqa["average"]["retention"]["pooled"]["value"] == pytest.approx(0.375)
    assert vqa["average"]["changed_fraction"] == 0.9 and vqa["average"]["sparsity"] is None
    # fine-tuning forgot half of shapes: pooled retention (20*0.5 + 20*1)/40
    assert summary["finetuned"]["vqa"]["retention"]["pooled"]["value"] == pytest.approx(0.75)
    assert summary["finetuned"]["vqa"]["gain_over_base"]["value"] == pytest.approx(5.0)
    assert summary["groups"]["vqa"]["base_reach"]["pooled"]["value"] == pytest.approx(0.2)


def test_caption_reach_uses_cider_and_undefined_shares_are_noted(run):
    from unforget.evaluation.captioning import cider_d_scores

    summary = summarise_tailor(run).to_dict()
    row = rows(summary, "caption")["model-tailor-10pct"]
    assert not row["done"]
    exact = [refs[0] for refs in CAPTIONS]
    full = cider_d_scores(exact, CAPTIONS)
    half = cider_d_scores(exact[:2] + ["zebra", "zebra"], CAPTIONS)
    assert row["reach"]["pooled"]["value"] == pytest.approx(half.sum() / full.sum())
    assert row["scores"]["scenes-caption"]["metric"] == "cider"
    # the base model's captions score 0: its share of the fine-tuned model is 0, not undefined
    assert summary["groups"]["caption"]["base_reach"]["pooled"]["value"] == 0.0
    assert summary["missing_runs"] == ["caption/model-tailor-5pct", "caption/model-tailor-10pct", "caption/average"]


def test_headline_verdicts_at_the_largest_sparsity_within_the_bound(run):
    claims = {(c["group"], c["id"]): c for c in summarise_tailor(run).to_dict()["claims"]}
    keep, reach = claims[("vqa", "keep")], claims[("vqa", "reach")]
    assert keep["sparsity"] == 0.1 and keep["verdict"] == "held" and reach["verdict"] == "held"
    assert "100.0%" in keep["evidence"]
    # the caption group's only model-tailor run is unfinished
    assert claims[("caption", "keep")]["verdict"] == "not shown"
    assert "no finished model-tailor run" in claims[("caption", "keep")]["evidence"]


def test_interval_verdicts():
    est = {"value": 0.5, "low": 0.4, "high": 0.6, "n": 40, "method": "bootstrap_percentile", "confidence": 0.95}
    assert at_least("c", est, 0.99, "retention").verdict == "not held"
    assert at_least("c", {**est, "low": 0.995, "value": 0.999, "high": 1.0}, 0.99, "r").verdict == "held"
    assert at_least("c", {**est, "high": 1.2}, 0.99, "r").verdict == "not shown"
    assert at_least("c", None, 0.99, "r").verdict == "not shown"


def test_report_files_and_detection(run):
    files = write_tailor_report(run)
    assert detect_report_kind(run).name == "tailor-study"
    assert files.html.is_file() and files.markdown.is_file()
    names = {p.name for p in files.plots}
    assert {"tradeoff-vqa.png", "sparsity-vqa.png"} <= names
    text = files.markdown.read_text()
    assert "[HELD]" in text and "plots/tradeoff-vqa.png" in text
    assert json.loads((run / "metrics.json").read_text())["study"] == "tailor"
