"""The benchmark formats (vqa, gqa, pope, coco-captions, karpathy, hf with a column mapping) on replicas written in
each benchmark's own schema, and how the evaluator scores their records (scorers, no-class rate, rank vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.benchmark_replicas import (CAPTIONS, GQA_QUESTIONS, POPE_ROWS, VQA_QUESTIONS, write_coco_captions,
                                           write_gqa, write_image, write_karpathy_coco, write_karpathy_flickr,
                                           write_pope, write_textvqa, write_vizwiz, write_vqav2)
from unforget.data import load_dataset
from unforget.errors import ConfigError, DataError
from unforget.evaluation.evaluator import rank_candidates, score_records
from unforget.evaluation.scorers import vqa_accuracy


def test_vqav2_pair_keeps_every_human_answer(tmp_path):
    qfile, afile = write_vqav2(tmp_path)
    ds = load_dataset(f"vqa:{qfile}?annotations={afile.name}")
    assert ds.task == "vqa" and ds.metric == "vqa"
    samples = ds.split("test")
    assert [s.id for s in samples] == [str(q[0]) for q in VQA_QUESTIONS]
    for s, (_qid, img, question, answers, qtype, atype) in zip(samples, VQA_QUESTIONS):
        assert s.question == question and list(s.meta["answers"]) == answers  # all ten, not the majority only
        assert s.meta["qtype"] == qtype and s.meta["answer_type"] == atype
        assert s.image.endswith(f"val2014/COCO_val2014_{img:012d}.jpg")
        s.load_image()
    assert samples[0].answer == "red"
    assert ds.question_for(samples[0], 0) == "What colour is the square? Answer the question using a single word " \
                                             "or phrase."
    # a folder holding the pair is read the same way
    assert [s.id for s in load_dataset(f"vqa:{tmp_path}").split("test")] == [s.id for s in samples]


def test_vqav2_errors_name_the_file_and_the_fix(tmp_path):
    qfile, afile = write_vqav2(tmp_path)
    with pytest.raises(DataError, match="annotations="):
        load_dataset(f"vqa:{qfile}")
    data = json.loads(afile.read_text())
    data["annotations"] = data["annotations"][:2]
    afile.write_text(json.dumps(data))
    with pytest.raises(DataError, match="question 1003 has no annotation"):
        load_dataset(f"vqa:{qfile}?annotations={afile.name}")
    write_vqav2(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000007.jpg").unlink()
    with pytest.raises(DataError, match=r"questions\[2\].*image not found.*image_pattern="):
        load_dataset(f"vqa:{qfile}?annotations={afile.name}")
    with pytest.raises(ConfigError, match="has no option 'annotation'"):
        load_dataset(f"vqa:{qfile}?annotation={afile.name}")


def test_vizwiz_and_textvqa_files_load_with_their_answers(tmp_path):
    viz = load_dataset(f"vqa:{write_vizwiz(tmp_path / 'viz')}")
    text = load_dataset(f"vqa:{write_textvqa(tmp_path / 'text')}?images=train_images")
    for ds in (viz, text):
        assert [list(s.meta["answers"]) for s in ds.split("test")] == [q[3] for q in VQA_QUESTIONS]
        assert ds.metric == "vqa"
    assert [s.id for s in text.split("test")] == [str(q[0]) for q in VQA_QUESTIONS]


def test_gqa_balanced_questions(tmp_path):
    ds = load_dataset(f"gqa:{write_gqa(tmp_path)}")
    assert ds.metric == "exact" and ds.task == "vqa"
    samples = {s.id: s for s in ds.split("test")}
    assert set(samples) == set(GQA_QUESTIONS)
    s = samples["201307251"]
    assert s.answer == "blue" and s.meta["qtype"] == "query" and s.image.endswith("images/n235859.jpg")


def test_pope_jsonl_in_its_official_keys(tmp_path):
    ds = load_dataset(f"pope:{write_pope(tmp_path)}?images=val2014")
    assert ds.metric == "pope" and ds.answer_list == ["yes", "no"]
    assert [(s.question, s.answer) for s in ds.split("test")] == [(t, a) for _i, t, a in POPE_ROWS]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"question_id": 1, "image": POPE_ROWS[0][0], "text": "Is there?", "label": "maybe"}))
    with pytest.raises(DataError, match=r"bad.json:1: the label is 'maybe'"):
        load_dataset(f"pope:{bad}?images=val2014")


def test_coco_captions_give_a_captioning_set(tmp_path):
    ds = load_dataset(f"coco-captions:{write_coco_captions(tmp_path)}?images=../val2014")
    assert ds.task == "caption"
    samples = ds.split("test")
    assert [s.id for s in samples] == [str(i) for i in CAPTIONS]
    assert [list(s.meta["captions"]) for s in samples] == list(CAPTIONS.values())
    assert ds.question_for(samples[0], 0) == "Provide a one-sentence caption for the provided image."
    with pytest.raises(ConfigError, match="metric 'cider' is not a caption metric"):
        load_dataset(f"coco-captions:{tmp_path / 'annotations' / 'captions_val2014.json'}?images=../val2014"
                     "&metric=cider")


def test_karpathy_splits_for_coco_and_flickr(tmp_path):
    coco = load_dataset(f"karpathy:{write_karpathy_coco(tmp_path / 'coco')}")
    assert set(coco.splits) == {"test", "val"}
    assert [s.id for s in coco.split("test")] == [str(i) for i in list(CAPTIONS)[:2]]
    assert list(coco.split("val")[0].meta["captions"]) == list(CAPTIONS.values())[2]
    flickr = load_dataset(f"karpathy:{write_karpathy_flickr(tmp_path / 'f')}?images=flickr30k-images")
    assert len(flickr.split("test")) == 3 and flickr.task == "caption"
    with pytest.raises(DataError, match="has no split 'train'"):
        load_dataset(f"karpathy:{tmp_path / 'coco' / 'dataset_coco.json'}?splits=train")


def test_hf_column_mapping_for_vqa_answers_and_captions(tmp_path):
    datasets = pytest.importorskip("datasets")
    for k in range(2):
        write_image(tmp_path / f"{k}.png", k)
    vqa = datasets.Dataset.from_dict({
        "image": [str(tmp_path / "0.png"), str(tmp_path / "1.png")], "question": ["What colour?", "How many?"],
        "multiple_choice_answer": ["red", "2"],
        "answers": [[{"answer": a, "answer_id": i} for i, a in enumerate(q[3])] for q in VQA_QUESTIONS[:2]]})
    vqa.save_to_disk(str(tmp_path / "vqa"))
    ds = load_dataset(f"hf:{tmp_path / 'vqa'}?image_column=image&answer_column=multiple_choice_answer"
                      "&answers_column=answers&metric=vqa")
    assert ds.metric == "vqa" and [list(s.meta["answers"]) for s in ds.split("test")] == [VQA_QUESTIONS[0][3],
                                                                                        VQA_QUESTIONS[1][3]]
    caps = datasets.Dataset.from_dict({"image": [str(tmp_path / "0.png")], "answer": [list(CAPTIONS[391895])]})
    caps.save_to_disk(str(tmp_path / "caps"))
    cds = load_dataset(f"hf:{tmp_path / 'caps'}?image_column=image&captions_column=answer")
    assert cds.task == "caption" and list(cds.split("test")[0].meta["captions"]) == CAPTIONS[391895]
    with pytest.raises(DataError, match="sample test/0: metric=vqa .* answers_column="):  # one answer: 0 always
        load_dataset(f"hf:{tmp_path / 'vqa'}?image_column=image&answer_column=multiple_choice_answer&metric=vqa")
    with pytest.raises(DataError, match="unknown metric 'vqa2'"):
        load_dataset(f"hf:{tmp_path / 'vqa'}?image_column=image&answer_column=multiple_choice_answer&metric=vqa2")


# ------------------------------------------------------------------------------- scoring the records of a set


def _records(ds, answers, correct=None):
    """Judged records as the evaluator writes them, each with its benchmark score."""
    from unforget.evaluation.scorers import score_answer

    out = []
    for s, a, c in zip(ds.split("test"), answers, correct or [None] * len(answers)):
        judged = c if c is not None else a == s.answer
        out.append({"id": s.id, "dataset": ds.name, "task": ds.task, "answer": a, "reference": s.answer,
                    "prediction": a if judged else None, "correct": judged,
                    "judgements": {"exact": {"prediction": a if judged else None, "correct": judged}},
                    "score": score_answer(ds.metric, a, s.answer, s.meta.get("answers")) if ds.metric else None})
    return out


def test_vqa_set_is_scored_with_vqa_accuracy_not_the_majority_answer(tmp_path):
    qfile, afile = write_vqav2(tmp_path)
    ds = load_dataset(f"vqa:{qfile}?annotations={afile.name}")
    answers = ["maroon", "two", "Yes."]  # one human said maroon; "two" is "2" as 3 + 2 humans wrote it; all said yes
    result = score_records(ds, _records(ds, answers), ["exact"], [])
    m = result.metrics
    want = [vqa_accuracy(a, q[3]) for a, q in zip(answers, VQA_QUESTIONS)]
    assert want == pytest.approx([0.3, 1.0, 1.0])
    assert m.metric == "vqa" and m.accuracy == pytest.approx(np.mean(want)) and m.interval.startswith("bootstrap")
    assert m.accuracy_low <= m.accuracy <= m.accuracy_high
    assert result.by_judge["exact"].accuracy == pytest.approx(0.0)  # the judge's own view is kept apart


def test_pope_set_reports_precision_recall_f1_and_yes_ratio(tmp_path):
    ds = load_dataset(f"pope:{write_pope(tmp_path)}?images=val2014")
    m = score_records(ds, _records(ds, ["Yes, there is.", "Yes", "No.", "no"]), ["exact"], []).metrics
    # truth yes, no, yes, no; read yes, yes, no, no: TP 1, FP 1, FN 1, TN 1
    assert m.metric == "pope" and m.accuracy == pytest.approx(0.5) and m.interval == "wilson"
    assert m.others["precision"]["value"] == pytest.approx(0.5)
    assert m.others["recall"]["value"] == pytest.approx(0.5)
    assert m.others["f1"]["value"] == pytest.approx(0.5)
    assert m.others["yes_ratio"]["value"] == pytest.approx(0.5)


def test_free_answer_no_class_rate_counts_answers_outside_the_vocabulary(tmp_path):
    rows = [{"image": f"{k}.png", "question": "What colour?", "answer": a} for k, a in enumerate(["red", "blue",
                                                                                                 "green", "red"])]
    for k in range(4):
        write_image(tmp_path / f"{k}.png", k)
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(f"jsonl:{tmp_path / 'set.jsonl'}")
    assert rank_candidates(ds) == ["blue", "green", "red"]
    # wrong answers: "blue" (a vocabulary answer) and "purple" (none); right: "blue", "Red."
    result = score_records(ds, _records(ds, ["blue", "blue", "purple", "Red."], [False, True, False, True]),
                           ["exact"], [])
    assert result.metrics.accuracy == pytest.approx(0.5)
    assert result.metrics.no_class_rate == pytest.approx(0.25)  # not 1 - accuracy (0.5)
