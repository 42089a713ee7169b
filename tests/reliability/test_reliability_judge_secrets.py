"""Guarantees 4 and 5 end to end: `unforget eval` with the llm judge against the fault-injecting local server.

Every fault (HTTP 500, 429 with Retry-After, a malformed and a truncated JSON body, a reply that is neither yes nor
no, retries exhausted) ends as a retried success or as an unjudged sample counted in metrics.json, never as a wrong
answer; the API key, given only in the environment, appears in no file the run writes (config, samples, metrics,
report, judge cache) and in no log line or console output. Unit tests of each fault: tests/unit/test_judges_llm.py.
"""

from __future__ import annotations

import json
import logging

import pytest

from finetune_helpers import build_tiny_llava
from judge_server import JudgeServer
from unforget.cli import main
from unforget.evaluation.judges.llm import ENV_API_KEY, ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL
from unforget.runs import read_jsonl

KEY = "sk-unforget-reliability-8c1d5e0f"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


def test_judge_faults_are_counted_and_the_key_is_written_nowhere(tmp_path, monkeypatch, caplog, capsys):
    model = tmp_path / "model"
    build_tiny_llava(model)
    cache = tmp_path / "judge-cache"
    monkeypatch.delenv(ENV_LOCAL_MODEL, raising=False)
    monkeypatch.setenv(ENV_API_KEY, KEY)
    monkeypatch.setenv(ENV_MODEL, "judge-test")
    monkeypatch.setenv("UNFORGET_JUDGE_CACHE", str(cache))
    out = tmp_path / "run"
    with JudgeServer() as server, caplog.at_level(logging.DEBUG):
        monkeypatch.setenv(ENV_BASE_URL, server.base_url)
        # the tiny model gives the same answer to the two images of a colour: 3 distinct questions, asked once each
        # and in order (concurrency 1): the first meets HTTP 500 then 429 with Retry-After and is judged on the third
        # attempt; the second gets a malformed body (not retried); the third gets 500 until its retries run out
        server.faults += ["500", "429", "malformed", "500", "500", "500"]
        rc = main(["eval", "--model", str(model), "--device", "cpu", "--datasets", "ft-colours-vqa", "--split", "train",
                   "--limit", "6", "--batch-size", "6", "--max-new-tokens", "2", "--judges", "llm", "--out", str(out),
                   "judge_options.llm.concurrency=1", "judge_options.llm.max_retries=2",
                   "judge_options.llm.backoff=0.001", "judge_options.llm.max_retry_after=0.001"])
        assert rc == 0
        assert server.calls == 3 + 1 + 3
    records = read_jsonl(out / "samples.jsonl")
    assert len({r["answer"] for r in records}) == 3
    unjudged = [r for r in records if r["correct"] is None]
    errors = " | ".join(r["judgements"]["llm"]["error"] for r in unjudged)
    assert len(unjudged) == 4 and "malformed response" in errors and "3 attempts" in errors, errors
    metrics = json.loads((out / "metrics.json").read_text())
    (m,) = metrics["datasets"].values()
    assert (m["unjudged"], m["n"]) == (4, 2)  # judge failures are counted apart, not as wrong answers
    stats = json.dumps(metrics)
    assert '"retries": 4' in stats and '"failures": 1' in stats, stats[:2000]

    written = [p for folder in (out, cache) for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in written if cache in p.parents)  # the cache was written
    for path in written:
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    console = capsys.readouterr()
    assert KEY not in caplog.text and KEY not in console.out and KEY not in console.err
    assert len(written) >= 4
