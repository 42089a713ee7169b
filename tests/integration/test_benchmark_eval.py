"""`unforget eval` end to end on benchmark replicas (VQAv2, GQA, POPE, COCO captions, Karpathy, free-answer JSONL in
rank mode) with a tiny random LLaVA: records carry per-sample scores the metrics are made of, recomputed here from
the official-style scorers and from pycocoevalcap called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.benchmark_replicas import (VQA_QUESTIONS, write_coco_captions, write_gqa, write_image,
                                           write_karpathy_coco, write_pope, write_vqav2)
from unforget.cli import main
from unforget.evaluation.scorers import exact_match, pope_yes_no, vqa_accuracy
from unforget.runs import read_jsonl


def run_cli(*args):
    return main([str(a) for a in args])


def test_vqa_gqa_pope_sets_score_each_answer_as_the_benchmarks_do(random_llava_dir, tmp_path):
    qfile, afile = write_vqav2(tmp_path / "vqa")
    vqa = f"vqa:{qfile}?annotations={afile.name}"
    gqa = f"gqa:{write_gqa(tmp_path / 'gqa')}"
    pope = f"pope:{write_pope(tmp_path / 'pope')}?images=val2014"
    out = tmp_path / "run"
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", f"{vqa},{gqa},{pope}", "--batch-size", 4,
                   "--max-new-tokens", 3, "--out", out) == 0
    records = read_jsonl(out / "samples.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]
    humans = {str(q[0]): q[3] for q in VQA_QUESTIONS}
    by_set = {ref: [r for r in records if r["dataset"] == ref] for ref in (vqa, gqa, pope)}
    assert [len(v) for v in by_set.values()] == [3, 3, 4]
    for r in by_set[vqa]:
        assert r["score"] == pytest.approx(vqa_accuracy(r["answer"], humans[r["id"]]))
    for r in by_set[gqa]:
        assert r["score"] == exact_match(r["answer"], r["reference"])
    for r in by_set[pope]:
        assert r["score"] == float(pope_yes_no(r["answer"]) == r["reference"])
    for ref, metric in ((vqa, "vqa"), (gqa, "exact"), (pope, "pope")):
        m = metrics[ref]
        assert m["metric"] == metric and m["n"] == len(by_set[ref])
        assert m["accuracy"] == pytest.approx(np.mean([r["score"] for r in by_set[ref]]))
        assert m["accuracy_low"] <= m["accuracy"] <= m["accuracy_high"]
    assert set(metrics[pope]["others"]) == {"precision", "recall", "f1", "yes_ratio"}


def test_caption_sets_from_disk_are_scored_as_pycocoevalcap_scores_them(random_llava_dir, tmp_path):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider

    from unforget.evaluation.captioning import coco_tokenize

    coco = f"coco-captions:{write_coco_captions(tmp_path / 'coco')}?images=../val2014"
    karpathy = f"karpathy:{write_karpathy_coco(tmp_path / 'k')}"
    out = tmp_path / "run"
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", f"{coco},{karpathy}", "--batch-size", 4,
                   "--out", out, "caption_max_new_tokens=8") == 0
    records = read_jsonl(out / "samples.jsonl")
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]
    for ref, n in ((coco, 3), (karpathy, 2)):  # the Karpathy replica's test split holds two images
        mine = [r for r in records if r["dataset"] == ref]
        assert len(mine) == n and all(r["task"] == "caption" and len(r["references"]) == 3 for r in mine)
        gts, res, _ = coco_tokenize([r["answer"] for r in mine], [r["references"] for r in mine])
        want, _ = Cider().compute_score(gts, res)
        assert metrics[ref]["cider"] == pytest.approx(want, abs=1e-12)
        assert metrics[ref]["cider_low"] <= metrics[ref]["cider"] <= metrics[ref]["cider_high"]


def test_rank_mode_on_a_free_answer_jsonl_ranks_its_answer_vocabulary(random_llava_dir, tmp_path):
    answers = ["red", "blue", "green", "red", "two"]
    for k in range(len(answers)):
        write_image(tmp_path / f"{k}.png", k)
    (tmp_path / "free.jsonl").write_text("".join(
        json.dumps({"image": f"{k}.png", "question": "What is it?", "answer": a}) + "\n"
        for k, a in enumerate(answers)))
    out = tmp_path / "rank"
    ref = f"jsonl:{tmp_path / 'free.jsonl'}"
    assert run_cli("eval", "--model", random_llava_dir, "--datasets", ref, "--mode", "rank", "--out", out) == 0
    records = read_jsonl(out / "samples.jsonl")
    vocabulary = {"blue", "green", "red", "two"}
    assert len(records) == 5
    assert all(r["prediction"] in vocabulary and r["rank_of_reference"] is not None for r in records)
    m = json.loads((out / "metrics.json").read_text())["datasets"][ref]
    assert m["no_class_rate"] == 0.0  # every ranked answer is a vocabulary answer
    assert m["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["reference"] for r in records]))
