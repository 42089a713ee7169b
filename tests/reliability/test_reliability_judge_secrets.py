"""Guarantees 4 and 5 end to end: `unforget eval` with the llm judge against the fault-injecting local server.

Every fault (HTTP 500, 429 with Retry-After, a malformed and a truncated JSON body, a reply that is neither yes nor
no, retries exhausted) ends as a retried success or as an unjudged sample counted in metrics.json, never as a wrong
answer, and the command exits 3 with the --rejudge command; the API key appears in no file a run writes (config,
samples, metrics, report, run.json, judge cache) and in no log line or console output, whichever way it was given:
the environment, a dotted override, a config file, a header option, `judge validate --judge-option`, a credential in
the base URL's query, an override on `--rejudge`. Unit tests of each fault: tests/unit/test_judges_llm.py.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.finetune_helpers import build_tiny_llava
from tests.judge_server import JudgeServer
from unforget.cli import main
from unforget.evaluation.judges.llm import ENV_API_KEY, ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL
from unforget.runs import read_jsonl
from unforget.runs.secrets import REDACTED, redact_secrets

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
        assert rc == 3  # verdicts are missing: say so, and how to fill them in
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
    assert "4 verdicts unjudged" in console.out and f"unforget eval --rejudge --out {out}" in console.out
    assert len(written) >= 4


# one canary per route, so that the test can check each one reached the server
CANARIES = {route: f"sk-canary-{route}-5f0c2a9e" for route in
            ("env", "override", "config-file", "header", "validate", "validate-header", "url-query", "rejudge")}


def test_a_key_given_any_way_is_sent_and_written_nowhere(model_dir, tmp_path, monkeypatch, caplog, capsys):
    runs = tmp_path / "runs"
    cache = tmp_path / "judge-cache"
    inputs = tmp_path / "inputs"  # the user's own config file holds its key: not something unforget wrote
    inputs.mkdir()
    monkeypatch.delenv(ENV_LOCAL_MODEL, raising=False)
    monkeypatch.delenv(ENV_API_KEY, raising=False)
    monkeypatch.setenv(ENV_MODEL, "judge-test")
    monkeypatch.setenv("UNFORGET_JUDGE_CACHE", str(cache))
    fast = ["judge_options.llm.backoff=0.001", "judge_options.llm.max_retry_after=0.001"]

    def evaluate(out: str, *extra: str) -> int:
        # each route asks with its own judge settings (max_tokens: another cache key), so none is served from the
        # cache and every key must reach the server
        return main(["eval", "--model", str(model_dir), "--device", "cpu", "--datasets", "ft-colours-vqa", "--split",
                     "train", "--limit", "4", "--batch-size", "4", "--max-new-tokens", "2", "--judges", "llm",
                     "--out", str(runs / out), *fast, *extra])

    with JudgeServer() as server, caplog.at_level(logging.DEBUG):
        server.models = ["judge-test"]
        monkeypatch.setenv(ENV_BASE_URL, server.base_url)
        # the environment
        monkeypatch.setenv(ENV_API_KEY, CANARIES["env"])
        assert evaluate("env") == 0
        monkeypatch.delenv(ENV_API_KEY)
        # a dotted override on `unforget eval`; the server echoes the Authorization header in an error body, then
        # fails again: the first answer is left unjudged (exit 3), to be rejudged below
        server.faults += ["echo_key", "500"]
        assert evaluate("override", f"judge_options.llm.api_key={CANARIES['override']}",
                        "judge_options.llm.max_tokens=500", "judge_options.llm.concurrency=1",
                        "judge_options.llm.max_retries=1") == 3
        # a config file
        config = inputs / "eval.yaml"
        config.write_text(f"judge_options:\n  llm:\n    api_key: {CANARIES['config-file']}\n    max_tokens: 400\n")
        assert evaluate("config-file", "-c", str(config)) == 0
        # a header option (Azure's api-key), no key at all besides
        assert evaluate("header", f"judge_options.llm.headers.api-key={CANARIES['header']}",
                        "judge_options.llm.max_tokens=300") == 0
        # a credential in the base URL's query
        assert evaluate("url-query",
                        f"judge_options.llm.base_url={server.base_url}?api_key={CANARIES['url-query']}") == 0
        # `judge validate --judge-option`, a key and a header
        assert main(["judge", "validate", "--gold", "digits", "--judges", "llm", "--resamples", "20", "--out",
                     str(runs / "validate"), "--judge-option", f"llm.api_key={CANARIES['validate']}",
                     "--judge-option", f"llm.headers={{X-Judge-Token: {CANARIES['validate-header']}}}"]) == 0
        # `--rejudge` with an override key: config.yaml and metrics.json are written again
        assert main(["eval", "--rejudge", "--out", str(runs / "override"),
                     f"judge_options.llm.api_key={CANARIES['rejudge']}"]) == 0

    # each key reached the server, the way it was given
    sent = [h.get("authorization") for h in server.headers]
    for route in ("env", "override", "config-file", "validate", "rejudge"):
        assert f"Bearer {CANARIES[route]}" in sent, route
    assert any(h.get("api-key") == CANARIES["header"] for h in server.headers)
    assert any(h.get("x-judge-token") == CANARIES["validate-header"] for h in server.headers)
    assert any(f"api_key={CANARIES['url-query']}" in p for p in server.paths)
    # ... and is nowhere else: every file written, the log, the console
    written = [p for folder in (runs, cache) for p in folder.rglob("*") if p.is_file()]
    assert {"config.yaml", "metrics.json", "samples.jsonl", "judge_cache.jsonl"} <= {p.name for p in written}
    console = capsys.readouterr()
    for route, canary in CANARIES.items():
        for path in written:
            assert canary.encode() not in path.read_bytes(), f"the {route} key leaked into {path}"
        for where, text in (("log", caplog.text), ("stdout", console.out), ("stderr", console.err)):
            assert canary not in text, f"the {route} key leaked into the {where}"
    # the written config says a key was given, without it; the rejudge read it back and used the override
    assert f"api_key: {REDACTED}" in (runs / "override" / "config.yaml").read_text()
    assert all(r["correct"] is not None for r in read_jsonl(runs / "override" / "samples.jsonl"))


def test_redaction_by_name_leaves_unforget_s_own_fields_alone():
    doc = {"config": {"judge_options": {"llm": {"api_key": "k1", "API-Key": "k2", "max_tokens": 512, "token": "k3",
                                                "headers": {"api-key": "k4"}}},
                      "model": {"name": "m"}},
           "judge_stats": {"llm": {"prompt_tokens": 50, "completion_tokens": 1, "tokens": 51}},
           "datasets": {"objects": {"confusion": {"key": {"key": 3}}, "n": 3}},  # a class named "key" keeps its counts
           "judge_identity": {"base_url": "https://u:pw@h/v1?api-version=1&api_key=k5"}}
    out = redact_secrets(doc, everywhere=False)
    llm = out["config"]["judge_options"]["llm"]
    assert (llm["api_key"], llm["API-Key"], llm["token"], llm["headers"]) == (REDACTED, REDACTED, REDACTED,
                                                                                 {"api-key": REDACTED})
    assert llm["max_tokens"] == 512 and out["judge_stats"] == doc["judge_stats"]
    assert out["datasets"] == doc["datasets"]
    assert out["judge_identity"]["base_url"] == f"https://u:{REDACTED}@h/v1?api-version=1&api_key={REDACTED}"
    for k in ("k1", "k2", "k3", "k4", "k5", ":pw@"):
        assert k not in json.dumps(out)
    assert doc["config"]["judge_options"]["llm"]["api_key"] == "k1"  # a copy: the live config keeps its key
