"""The LLM judge against a local OpenAI-protocol server: verdicts, every fault, cache, key hygiene, local backend."""

import json
import logging
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (judge_server, tiny_models)

from judge_server import JudgeServer  # noqa: E402

from unforget.errors import JudgeError  # noqa: E402
from unforget.evaluation.judges.base import JUDGES, JudgeItem  # noqa: E402
from unforget.evaluation.judges.cache import JudgeCache, judge_cache_key  # noqa: E402
from unforget.evaluation.judges.llm import (  # noqa: E402
    ENV_API_KEY, ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL, PROMPT_VERSION, LLMJudge, parse_retry_after,
    parse_yes_no, public_url)

KEY = "sk-test-Zq8rT3kVw9SECRETvalue"
Q = "What is in the image? Answer with the colour and the shape."
LABELS = ["red star", "blue circle", "green square"]


@pytest.fixture(autouse=True)
def _no_judge_env(monkeypatch):
    for env in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY, ENV_LOCAL_MODEL):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def server():
    with JudgeServer() as s:
        yield s


def make_judge(server, tmp_path, **kw):
    opts = dict(base_url=server.base_url, model="judge-test", api_key=KEY, cache_dir=tmp_path / "cache",
                backoff=0.0, max_retries=3, timeout=5.0, concurrency=4)
    opts.update(kw)
    return LLMJudge(**opts)


def item(answer, reference="red star", synonyms=None):
    return JudgeItem(Q, answer, reference, LABELS, synonyms or {})


@pytest.mark.parametrize("reply,expected", [
    ("yes", True), ("Yes.", True), ("NO", False), ("no, it names a circle", False), ("**Yes**", True),
    ("<think>it could be no</think>\nyes", True), ("maybe", None), ("", None), (None, None),
    ("yesterday", None), ("I think yes", None), ("The answer: no", None),
])
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) is expected


def test_retry_after_and_public_url():
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert public_url("https://user:pw@api.example.com:8443/v1?api_key=x") == "https://api.example.com:8443/v1"


def test_registered_and_needs_an_endpoint():
    assert JUDGES.get("llm") is LLMJudge
    with pytest.raises(JudgeError, match=ENV_BASE_URL):
        LLMJudge(use_cache=False)


def test_environment_configures_the_endpoint(server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_BASE_URL, server.base_url)
    monkeypatch.setenv(ENV_MODEL, "env-model")
    monkeypatch.setenv(ENV_API_KEY, KEY)
    judge = LLMJudge(cache_dir=tmp_path, backoff=0.0)
    assert judge.identity()["model"] == "env-model"
    assert judge.identity()["prompt_version"] == PROMPT_VERSION
    assert judge.judge([item("a red star")])[0].correct is True
    assert server.authorization == [f"Bearer {KEY}"]
    # a constructor argument beats the environment
    assert LLMJudge(model="arg-model", cache_dir=tmp_path).identity()["model"] == "arg-model"


def test_verdicts_tokens_and_cost(server, tmp_path):
    judge = make_judge(server, tmp_path, cost_per_1k_prompt_tokens=2.0, cost_per_1k_completion_tokens=10.0)
    verdicts = judge.judge([item("It is a red star."), item("a blue circle"), item("crimson star"),
                            item("crimson star", synonyms={"red star": ["crimson star"]})])
    assert [v.correct for v in verdicts] == [True, False, False, True]
    assert [v.prediction for v in verdicts] == ["red star", None, None, "red star"]
    assert all(v.judge == "llm" and v.confident and v.error is None for v in verdicts)
    assert verdicts[0].raw == {"reply": "yes", "cached": False}
    s = judge.stats()
    assert (s["calls"], s["cache_hits"], s["retries"], s["unjudged"]) == (4, 0, 0, 0)
    assert (s["prompt_tokens"], s["completion_tokens"], s["tokens"]) == (200, 4, 204)
    assert s["cost"] == pytest.approx(200 * 2.0 / 1000 + 4 * 10.0 / 1000)


@pytest.mark.parametrize("faults,retries", [(["500", "500"], 2), (["429"], 1), (["500", "429", "500"], 3)])
def test_transient_faults_are_retried_then_succeed(server, tmp_path, faults, retries):
    server.faults += faults
    judge = make_judge(server, tmp_path, concurrency=1)
    v = judge.judge([item("a red star")])[0]
    assert (v.correct, v.error) == (True, None)
    assert judge.stats()["retries"] == retries
    assert server.calls == retries + 1


def test_timeout_is_retried(tmp_path):
    with JudgeServer(sleep_s=60.0) as server:  # released when the server stops
        server.faults.append("sleep")
        judge = make_judge(server, tmp_path, timeout=1.0, concurrency=1)
        v = judge.judge([item("a red star")])[0]
        assert v.correct is True
        assert judge.stats()["retries"] == 1


def test_retries_exhausted_is_unjudged_and_not_cached(server, tmp_path):
    server.faults += ["500"] * 4  # max_retries=3: four attempts, all fail
    judge = make_judge(server, tmp_path, concurrency=1)
    v = judge.judge([item("a red star")])[0]
    assert (v.correct, v.prediction) == (None, None)
    assert "HTTP 500" in v.error and "4 attempts" in v.error
    s = judge.stats()
    assert (s["failures"], s["unjudged"], s["retries"]) == (1, 1, 3)
    # nothing was cached: a rerun asks again (and now succeeds)
    again = make_judge(server, tmp_path).judge([item("a red star")])[0]
    assert again.correct is True and server.calls == 5


@pytest.mark.parametrize("fault,message", [("malformed", "malformed response"), ("truncated", "malformed response"),
                                           ("maybe", "neither yes nor no")])
def test_unreadable_replies_are_unjudged_without_retry(server, tmp_path, fault, message):
    server.faults.append(fault)
    judge = make_judge(server, tmp_path, concurrency=1)
    verdicts = judge.judge([item("a red star"), item("a blue circle")])
    bad = [v for v in verdicts if v.correct is None]
    assert len(bad) == 1 and message in bad[0].error
    assert [v.correct for v in verdicts if v.correct is not None] in ([True], [False])
    assert judge.stats()["unparseable"] == 1 and judge.stats()["retries"] == 0
    assert server.calls == 2


def test_connection_refused_leaves_everything_unjudged(tmp_path, caplog):
    server = JudgeServer().start()
    judge = make_judge(server, tmp_path)
    server.stop()
    with caplog.at_level(logging.WARNING):
        verdicts = judge.judge([item("a red star"), item("a blue circle")])
    assert [v.correct for v in verdicts] == [None, None]
    assert all("Connection" in v.error or "URLError" in v.error for v in verdicts)
    assert judge.stats()["failures"] == 2 and judge.stats()["retries"] == 6
    assert "2 of 2 answers unjudged" in caplog.text


def test_refused_key_stops_with_an_actionable_error(server, tmp_path):
    server.default = "401"
    with pytest.raises(JudgeError, match=ENV_API_KEY) as exc:
        make_judge(server, tmp_path).judge([item("a red star")])
    assert KEY not in str(exc.value)


def test_rerun_is_served_from_the_cache(server, tmp_path):
    items = [item("a red star"), item("a blue circle"), item("a red star")]  # the duplicate is asked once
    first = make_judge(server, tmp_path).judge(items)
    assert server.calls == 2
    judge = make_judge(server, tmp_path)
    second = judge.judge(items)
    assert server.calls == 2  # no new call
    assert [v.correct for v in second] == [v.correct for v in first] == [True, False, True]
    assert all(v.raw["cached"] for v in second)
    assert (judge.stats()["cache_hits"], judge.stats()["calls"]) == (3, 0)
    # another judge model or prompt version is another key
    make_judge(server, tmp_path, model="other-judge").judge(items[:1])
    assert server.calls == 3


def test_the_api_key_goes_nowhere_but_the_header(server, tmp_path, caplog):
    server.faults += ["echo_key"] * 4 + ["500", "429"]
    with caplog.at_level(logging.DEBUG):
        judge = make_judge(server, tmp_path, concurrency=1)
        verdicts = judge.judge([item("a red star"), item("a blue circle"), item("a green square")])
        server.default = "401"
        with pytest.raises(JudgeError) as exc:
            make_judge(server, tmp_path).judge([item("a yellow star")])
    assert server.authorization[0] == f"Bearer {KEY}"  # it was sent...
    assert verdicts[0].correct is None and "***" in verdicts[0].error  # ...echoed back, and redacted
    records = json.dumps([v.to_dict() for v in verdicts]) + json.dumps(judge.identity()) + json.dumps(judge.stats())
    assert KEY not in records
    assert KEY not in str(exc.value)
    assert KEY not in caplog.text and "LLM judge" in caplog.text  # something was logged, not the key
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite") for p in files) and any(p.name.endswith(".jsonl") for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p


def test_cache_replays_its_audit_log(tmp_path):
    # a crash after the log append and before the SQLite upsert: the next open recovers the verdict
    with JudgeCache(tmp_path) as cache:
        cache.put("k1", {"correct": True, "reply": "yes"})
    with open(tmp_path / "judge_cache.jsonl", "a") as fh:
        fh.write(json.dumps({"cache_key": "k2", "created_at": 0, "record": {"correct": False, "reply": "no"}}) + "\n")
        fh.write('{"cache_key": "k3", "rec')  # torn last line: ignored
    with JudgeCache(tmp_path) as cache:
        assert cache.get("k2") == {"correct": False, "reply": "no"}
        assert cache.get("k1")["correct"] is True and cache.get("k3") is None and len(cache) == 2


def test_cache_key_separates_its_fields():
    assert judge_cache_key("m", "p", "q", "ab", "c") != judge_cache_key("m", "p", "q", "a", "bc")
    assert judge_cache_key("m", "p", "q", "a", "c") == judge_cache_key("m", "p", "q", "a", "c")


def _write_cache(folder: str, worker: int, n: int) -> None:
    with JudgeCache(folder) as cache:
        for i in range(n):
            cache.put(f"shared-{i}", {"correct": True, "reply": "yes", "worker": worker})
            cache.put(f"w{worker}-{i}", {"correct": bool(i % 2), "reply": "x" * 500})


def test_cache_is_safe_with_two_writer_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n = 150
    procs = [ctx.Process(target=_write_cache, args=(str(tmp_path), w, n)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = (tmp_path / "judge_cache.jsonl").read_text().splitlines()
    assert len(lines) == 4 * n
    assert all(json.loads(line)["record"]["correct"] in (True, False) for line in lines)  # no torn lines
    with JudgeCache(tmp_path) as cache:
        assert len(cache) == 3 * n
        assert cache.get(f"w1-{n - 1}")["reply"] == "x" * 500


def _tiny_causal_lm(folder, *, always_yes=False):
    """A tiny LlamaForCausalLM with unforget's BPE tokenizer; ``always_yes``: weights set so that every next token
    is "yes" (all weights zero but the attention output biases, whose constant residual the head maps to "yes")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unforget.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["Question: Correct label: Model answer: yes no red star blue circle"] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512, attention_bias=always_yes,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                         bos_token_id=tok.bos_token_id))
    if always_yes:
        yes = tok.convert_tokens_to_ids("yes")
        assert yes != tok.unk_token_id
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.fill_(1.0 if name.endswith("norm.weight") or name.endswith("o_proj.bias") else 0.0)
            model.lm_head.weight[yes] = 1.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_local_backend_with_a_random_causal_lm(tmp_path):
    folder = _tiny_causal_lm(tmp_path / "judge")
    items = [item("a red star"), item("a blue circle"), item("a red star")]
    judge = LLMJudge(judge_model=folder, cache_dir=tmp_path / "cache", device="cpu", batch_size=2, max_tokens=3)
    assert judge.identity()["backend"] == "local" and judge.identity()["model"] == folder
    verdicts = judge.judge(items)
    s = judge.stats()
    assert s["calls"] == 2 and s["prompt_tokens"] > 0 and 0 < s["completion_tokens"] <= 6
    # a random model says anything: each answer is judged or counted unjudged, never guessed
    assert all((v.correct is None) == (v.error is not None) for v in verdicts)
    unjudged_answers = {it.answer for it, v in zip(items, verdicts) if v.correct is None}
    assert s["unjudged"] == len(unjudged_answers)
    # the rerun asks the model again only for what it could not judge
    again = LLMJudge(judge_model=folder, cache_dir=tmp_path / "cache", device="cpu", max_tokens=3)
    again.judge(items)
    assert again.stats()["cache_hits"] == sum(v.correct is not None for v in verdicts)
    assert again.stats()["calls"] == len(unjudged_answers)


def test_local_backend_verdicts_and_cache(tmp_path):
    folder = _tiny_causal_lm(tmp_path / "judge", always_yes=True)
    items = [item("a red star"), item("a blue circle"), item("green"), item("a red star")]
    judge = LLMJudge(judge_model=folder, cache_dir=tmp_path / "cache", device="cpu", batch_size=2, max_tokens=1)
    verdicts = judge.judge(items)
    assert [v.raw["reply"] for v in verdicts] == ["yes"] * 4
    assert [(v.correct, v.prediction) for v in verdicts] == [(True, "red star")] * 4
    assert (judge.stats()["calls"], judge.stats()["completion_tokens"]) == (3, 3)
    again = LLMJudge(judge_model=folder, cache_dir=tmp_path / "cache", device="cpu", max_tokens=1)
    assert [v.correct for v in again.judge(items)] == [True] * 4
    assert (again.stats()["calls"], again.stats()["cache_hits"]) == (0, 4)
