"""`unforget eval` (generate and rank, every judge path the evaluator owns) on a tiny model of each family."""

import json

import pytest

from tests.tiny_models import FAMILIES, session_tiny_model
from unforget.cli import main
from unforget.runs import read_jsonl


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_answers_in_both_modes(family, tmp_path, tmp_path_factory):
    folder = session_tiny_model(family, tmp_path_factory)
    for mode in ("generate", "rank"):
        out = tmp_path / f"run-{mode}"
        rc = main(["eval", "--model", str(folder), "--datasets", "shapes", "--limit", "3", "--batch-size", "2",
                   "--max-new-tokens", "3", "--mode", mode, "--out", str(out)])
        assert rc == 0
        records = read_jsonl(out / "samples.jsonl")
        assert len(records) == 3 and all(r["mode"] == mode for r in records)
        if mode == "rank":
            assert all(r["prediction"] in json.dumps(r["top_k"]) for r in records)
        metrics = json.loads((out / "metrics.json").read_text())["datasets"]["shapes"]
        assert metrics["n"] == 3
