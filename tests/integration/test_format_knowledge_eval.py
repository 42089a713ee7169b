"""`unforget eval --also-rank`: generated answers and the likelihood ranking in one record, and the split."""

import json

from unforget.cli import main
from unforget.evaluation.metrics import split_records
from unforget.runs import read_jsonl


def test_also_rank_records_match_a_rank_run_and_give_the_split(random_llava_dir, tmp_path):
    common = ["--model", str(random_llava_dir), "--datasets", "shapes", "--limit", "4", "--batch-size", "2"]
    both, ranked = tmp_path / "both", tmp_path / "rank"
    assert main(["eval", *common, "--max-new-tokens", "3", "--also-rank", "--out", str(both)]) == 0
    assert main(["eval", *common, "--mode", "rank", "--out", str(ranked)]) == 0
    records, rank_records = read_jsonl(both / "samples.jsonl"), read_jsonl(ranked / "samples.jsonl")
    by_id = {r["id"]: r for r in rank_records}
    for r in records:
        assert r["mode"] == "generate" and "rank_of_reference" not in r  # the generated answer's fields stay its own
        assert r["rank"]["prediction"] == by_id[r["id"]]["prediction"]
        assert r["rank"]["correct"] == (by_id[r["id"]]["rank_of_reference"] == 0)
    doc = json.loads((both / "metrics.json").read_text())["datasets"]["shapes"]
    split = split_records(records)
    assert doc["format_knowledge"]["n"] == split.n == 4
    assert doc["format_knowledge"]["counts"] == split.counts
    assert split_records([{k: v for k, v in r.items() if k != "rank"} for r in records], rank_records).counts \
        == split.counts
