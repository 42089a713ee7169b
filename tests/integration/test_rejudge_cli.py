"""`unforget eval --rejudge` on a real run folder: failed verdicts are filled in, answers and other records kept."""

import json

from unforget.cli import main
from unforget.runs import read_jsonl


def test_rejudge_restores_failed_verdicts_without_generating(random_llava_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--model", str(random_llava_dir), "--datasets", "digits", "--limit", "6", "--batch-size",
                 "3", "--max-new-tokens", "3", "--out", str(out)]) == 0
    original = read_jsonl(out / "samples.jsonl")
    first = json.loads((out / "metrics.json").read_text())["datasets"]["digits"]
    failed = [dict(r) for r in original]
    for r in failed[:2]:  # as an LLM judge that could not reach its endpoint leaves them
        r["correct"] = r["prediction"] = None
        r["judgements"] = {"exact": {**r["judgements"]["exact"], "correct": None, "error": "endpoint down"}}
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in failed))
    assert main(["eval", "--rejudge", "--out", str(out), "model.name=/nonexistent"]) == 0  # no model is loaded
    again = read_jsonl(out / "samples.jsonl")
    assert again == original
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["rejudge"]["sent"] == {"exact": 2} and doc["rejudge"]["touched"] == 2
    assert doc["datasets"]["digits"]["accuracy"] == first["accuracy"]
    assert doc["datasets"]["digits"]["confusion"] == first["confusion"]
