"""The typed per-sample record (runs/records.py): the line it writes, key for key and in order, is the one every
reader (resume, rejudge, reports) expects; a line read back is the same record."""

import json

from unforget.runs.records import SampleRecord


def test_a_judged_answer_is_written_in_its_fixed_order_with_the_study_tag_first():
    rec = SampleRecord("test/1", "mnist-idx:/a/mnist", tag={"epoch": 2, "method": "lora"}, split="test",
                       task="classification", question="What digit?", answer="7", reference="7", label=7,
                       prediction="7", correct=True, judge="exact", confident=True, judge_identity={"name": "exact"},
                       judgements={"exact": {"correct": True}}, mode="rank", leaks={}, rank_of_reference=0,
                       top_k=[["7", -0.1]])
    # written by hand: the shape samples.jsonl had before the record was typed
    expected = {"epoch": 2, "method": "lora", "id": "test/1", "dataset": "mnist-idx:/a/mnist", "split": "test",
                "task": "classification", "question": "What digit?", "answer": "7", "reference": "7", "label": 7,
                "prediction": "7", "correct": True, "judge": "exact", "confident": True,
                "judge_identity": {"name": "exact"}, "judgements": {"exact": {"correct": True}}, "mode": "rank",
                "leaks": {}, "rank_of_reference": 0, "top_k": [["7", -0.1]]}
    assert json.dumps(rec.to_dict()) == json.dumps(expected)
    assert SampleRecord.from_dict(expected) == rec


def test_unjudged_is_kept_as_null_and_absent_options_are_left_out():
    rec = SampleRecord("q1", "scenes-vqa", split="test", task="vqa", question="Colour?", answer="blue",
                       reference="red", correct=None, mode="generate", leaks={}, qtype="")
    out = rec.to_dict()
    assert out["correct"] is None and "qtype" not in out and "rank" not in out and "top_k" not in out


def test_caption_and_skipped_records_have_their_own_shapes():
    cap = SampleRecord("c1", "scenes-caption", tag={"epoch": 0}, split="test", task="caption", question="Describe.",
                       answer="a red square", reference="a red square", references=["a red square"],
                       mode="generate")
    assert list(cap.to_dict()) == ["epoch", "id", "dataset", "split", "task", "question", "answer", "reference",
                                   "references", "mode"]
    bad = SampleRecord("x", "imagefolder:/d", tag={"step": 1}, skipped=True, error="unreadable image")
    assert bad.to_dict() == {"step": 1, "id": "x", "dataset": "imagefolder:/d", "skipped": True,
                             "error": "unreadable image"}
    assert bad.kind == "skipped" and cap.kind == "caption" and SampleRecord.from_dict(bad.to_dict()) == bad
