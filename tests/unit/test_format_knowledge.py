"""Format broke vs knowledge lost: classification, counts with Wilson intervals, record pairing, the EMT report."""

import json
from pathlib import Path

import pytest

from tests.synthetic_emt_run import make_run
from unforget.evaluation.metrics import (
    FORMAT_BROKE,
    FORMAT_KEPT,
    KNOWLEDGE_LOST,
    RANK_MISS,
    classify_error,
    format_knowledge_split,
    split_records,
)
from unforget.studies.emt import summarise_emt
from unforget.runs import read_jsonl
from unforget.stats import wilson_interval


def test_classify_error():
    assert classify_error(True, True) == FORMAT_KEPT
    assert classify_error(False, True) == FORMAT_BROKE
    assert classify_error(False, False) == KNOWLEDGE_LOST
    assert classify_error(True, False) == RANK_MISS


def test_counts_and_intervals_by_hand():
    fmt = [True, False, False, False, True, None, False]
    know = [True, True, False, True, False, True, None]
    split = format_knowledge_split(fmt, know)
    # judged both ways: 0 correct, 1 broke, 2 lost, 3 broke, 4 rank miss -> n = 5
    assert split.n == 5
    assert split.counts == {FORMAT_KEPT: 1, FORMAT_BROKE: 2, KNOWLEDGE_LOST: 1, RANK_MISS: 1}
    assert split.format_broke == wilson_interval(2, 5)
    assert split.knowledge_lost == wilson_interval(1, 5)
    assert split.format_share == wilson_interval(2, 3)
    assert format_knowledge_split([True, True], [True, True]).format_share is None  # no error to split
    assert format_knowledge_split([None], [True]) is None
    with pytest.raises(ValueError, match="same samples"):
        format_knowledge_split([True], [True, False])


def rec(i, exact, rank=None, **extra):
    r = {"id": f"s{i}", "dataset": "shapes", "mode": "generate", "correct": exact, "judge": "exact",
         "judgements": {"exact": {"correct": exact}}, **extra}
    if rank is not None:
        r["rank"] = {"prediction": "x", "correct": rank}
    return r


def test_split_from_also_rank_records_and_from_a_rank_run():
    generated = [rec(0, True, True), rec(1, False, True), rec(2, False, False), rec(3, None, True),
                 {"id": "s4", "dataset": "shapes", "skipped": True}]
    split = split_records(generated)
    assert split.n == 3 and split.counts[FORMAT_BROKE] == 1 and split.counts[KNOWLEDGE_LOST] == 1
    # the same split when the ranking comes from a separate rank-mode evaluation of the same samples
    plain = [{k: v for k, v in r.items() if k != "rank"} for r in generated]
    ranked = [{"id": f"s{i}", "dataset": "shapes", "mode": "rank", "rank_of_reference": 0 if ok else 2}
              for i, ok in enumerate([True, True, False, True])]
    assert split_records(plain, ranked).counts == split.counts
    assert split_records(plain) is None  # no knowledge verdict anywhere


def test_split_with_a_semantic_judge_and_a_cascade():
    records = [
        {"id": "a", "dataset": "d", "judgements": {"exact": {"correct": False}, "embedding": {"correct": True}}},
        {"id": "b", "dataset": "d", "judgements": {"exact": {"correct": False}, "embedding": {"correct": False}}},
        # a cascade keeps the exact stage's verdict in raw.stages
        {"id": "c", "dataset": "d", "judge": "llm", "judgements": {"cascade": {"correct": True, "raw": {
            "stages": {"exact": {"correct": False}, "llm": {"correct": True}}}}, "embedding": {"correct": True}}},
    ]
    split = split_records(records, knowledge_by="embedding")
    assert split.knowledge_by == "embedding"
    assert split.counts[FORMAT_BROKE] == 2 and split.counts[KNOWLEDGE_LOST] == 1


def add_rank(path: Path, knows) -> None:
    rows = read_jsonl(path)
    for r in rows:
        if r["dataset"] == "shapes":
            r["rank"] = {"prediction": "?", "correct": knows(int(r["id"][1:]), r["epoch"])}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_emt_summary_and_page_show_the_split(tmp_path):
    from unforget.studies.emt import build_emt_report

    run = make_run(tmp_path / "run")
    knows = lambda i, epoch: i < 15 or i == 20  # noqa: E731 - the ranking knows s0-s14 (and s20) every epoch
    for path in [run / "base" / "samples.jsonl", run / "lora" / "samples.jsonl", run / "projector" / "samples.jsonl"]:
        add_rank(path, knows)
    summary = summarise_emt(run)
    lora = next(a for a in summary.to_dict()["arms"] if a["name"] == "lora")
    assert set(lora["format_knowledge"]) == {"shapes"}  # digits records have no ranking
    points = {p["epoch"]: p for p in lora["format_knowledge"]["shapes"]}
    assert sorted(points) == [0, 1, 2]
    # lora epoch 2 on shapes: exact accepts s0, s1, s20; wrong s2-s19: s2-s14 known (13), s15-s19 not (5)
    e2 = points[2]
    assert e2["n"] == 21 and e2["counts"][FORMAT_BROKE] == 13 and e2["counts"][KNOWLEDGE_LOST] == 5
    assert e2["format_broke"]["value"] == pytest.approx(13 / 21)
    assert e2["format_share"]["value"] == pytest.approx(13 / 18)
    # base: s20 unjudged is left out; correct s0-s9; wrong s10-s14 known, s15-s19 not
    assert points[0]["n"] == 20 and points[0]["counts"][FORMAT_BROKE] == 5
    report = build_emt_report(summary)
    assert "Format or knowledge" in [s.title for s in report.sections]


def test_emt_summary_without_rank_has_no_split(tmp_path):
    summary = summarise_emt(make_run(tmp_path / "run")).to_dict()
    assert all(a["format_knowledge"] is None for a in summary["arms"])
