"""The LLM judge against a local OpenAI-protocol server: verdicts, every fault, cache, key hygiene, local backend;
judges that fail loudly: the cache keyed by the whole judge identity, unknown model names refused up front, a dead
endpoint given up on quickly and reported with the --rejudge command, replies read wherever the yes / no stands,
log-probability decisions, base URLs that keep their query, extra headers."""

import json
import logging
import multiprocessing

import pytest

from tests.judge_server import JudgeServer
from unforget.errors import JudgeError
from unforget.evaluation.judges.base import JUDGES, JudgeItem
from unforget.evaluation.judges.cache import JudgeCache, judge_cache_key
from unforget.evaluation.judges.llm import (
    ENV_API_KEY, ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL, PROMPT_VERSION, LLMJudge, endpoint_url, parse_retry_after,
    parse_yes_no, public_url)
from unforget.runs import read_jsonl
from unforget.runs.secrets import REDACTED

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


LONG_NO = "The model answer names a blue circle, while the correct label is a red star. " * 4 + "So the answer is: no."
LONG_YES_FIRST = "Yes. " + "The model answer names a red star, which is the label here. " * 5
LONG_CHANGES_ITS_MIND = "No. " + "Looking again, it names the red star, the label we were given. " * 4 + "So yes."


@pytest.mark.parametrize("reply,expected", [
    # a bare word, any case or markdown
    ("yes", True), ("Yes.", True), ("NO", False), ("**Yes**", True), ("Yes!", True),
    # a yes / no anywhere in a short answer (9ce8be9 read the first word only: all None)
    ("The answer is yes.", True), ("Answer: no", False), ("The answer: no", False), ("**Yes**, it is correct", True),
    ("I think yes", True), ("There is no match, so no.", False), ("No it is a circle", False),
    ("no, it names a circle", False), ("Yes, it names the star; no other class.", True),
    # reasoning blocks: dropped; an opening tag from the prompt; an unclosed one is no answer yet
    ("<think>it could be no</think>\nyes", True), ("<think>no... or yes</think> No.", False),
    ("the label matches</think>\n\nYes", True), ("<think>it could be no", None), ("<think>the answer is yes", None),
    # neither, both, negated or hedged: unjudged
    ("maybe", None), ("", None), (None, None), ("yesterday", None), ("Nope", None), ("I don't know", None),
    ("Not yes", None), ("It is not yes.", None), ("I can’t tell", None), ("no idea", None), ("Yes or no?", None),
    ("Yes and no.", None), ("There is no match.", None), ("The model answer is correct.", None),
    # a long reply: its first word and its last sentence, which must agree
    (LONG_NO, False), (LONG_YES_FIRST, True), (LONG_CHANGES_ITS_MIND, None),
])
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) is expected


def test_retry_after_and_public_url():
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert public_url("https://user:pw@api.example.com:8443/v1/?api_key=x") == \
        f"https://api.example.com:8443/v1?api_key={REDACTED}"
    # the query is kept (Azure's api-version selects the API) and the route goes before it
    azure = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-02-01"
    assert public_url(azure) == azure
    assert endpoint_url(azure, "chat/completions") == \
        "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-02-01"
    assert endpoint_url("http://h:8000/v1/", "models") == "http://h:8000/v1/models"


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
    # no connection at all: connect_retries (2), not max_retries (3), per request
    assert judge.stats()["failures"] == 2 and judge.stats()["retries"] == 4
    assert all("3 attempts" in v.error for v in verdicts)
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
    ident = {"model": "m", "prompt_version": "p"}
    assert judge_cache_key(ident, "q", "ab", "c") != judge_cache_key(ident, "q", "a", "bc")
    assert judge_cache_key(ident, "q", "a", "c") == judge_cache_key(dict(ident), "q", "a", "c")
    assert judge_cache_key(ident, "q", "a", "c") != judge_cache_key({**ident, "base_url": "http://b"}, "q", "a", "c")


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


# ------------------------------------------------------------------------------------------ judges that fail loudly


def test_cache_is_keyed_by_the_endpoint_not_the_model_name_alone(tmp_path):
    # two servers serving "judge-test" that disagree, one cache folder: the second is asked, its verdict reported
    with JudgeServer() as first, JudgeServer() as second:
        second.invert = True
        assert make_judge(first, tmp_path).judge([item("a red star")])[0].correct is True
        v = make_judge(second, tmp_path).judge([item("a red star")])[0]
        assert (second.calls, v.correct, v.raw["cached"]) == (1, False, False)
        # afterwards each is served from the cache with its own verdict
        assert make_judge(first, tmp_path).judge([item("a red star")])[0].raw == {"reply": "yes", "cached": True}
        assert make_judge(second, tmp_path).judge([item("a red star")])[0].correct is False
        assert (first.calls, second.calls) == (1, 1)
        # the base URL's query and the decoding settings that can change a verdict are part of the key; the key not
        make_judge(first, tmp_path, base_url=first.base_url + "?api-version=2").judge([item("a red star")])
        make_judge(first, tmp_path, max_tokens=64).judge([item("a red star")])
        make_judge(first, tmp_path, decide="logprobs").judge([item("a red star")])
        assert first.calls == 4
        make_judge(first, tmp_path, api_key="another-key").judge([item("a red star")])
        assert first.calls == 4


def test_unknown_model_is_refused_before_any_judging(server, tmp_path):
    server.models = ["judge-test", "judge-large"]
    with pytest.raises(JudgeError, match="Did you mean 'judge-test'") as exc:
        make_judge(server, tmp_path, model="judge-tset")
    assert "judge-large" in str(exc.value) and ENV_MODEL in str(exc.value)
    assert (server.calls, server.model_lists) == (0, 1)
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # the listing is asked with the key
    # the server echoes back whatever model name it gets: the identity is the configured name, checked in the list
    judge = make_judge(server, tmp_path)
    assert judge.judge([item("a red star")])[0].correct is True
    assert judge.identity()["model"] == server.bodies[-1]["model"] == "judge-test"
    make_judge(server, tmp_path, model="judge-tset", check_model=False)  # the check can be turned off
    assert server.model_lists == 2


def test_a_server_that_lists_no_models_is_judged_anyway(server, tmp_path, caplog):
    assert server.models is None  # GET /models: 404
    with caplog.at_level(logging.DEBUG, logger="unforget.evaluation.judges.llm"):
        judge = make_judge(server, tmp_path, model="anything")
    assert "HTTP 404" in caplog.text and "not checked" in caplog.text
    assert judge.judge([item("a red star")])[0].correct is True


def test_consecutive_failures_stop_the_judge(server, tmp_path, caplog):
    server.default = "500"  # every request fails: after 3 in a row, each after its retries, nothing more is sent
    judge = make_judge(server, tmp_path, concurrency=1, max_retries=1)
    with caplog.at_level(logging.ERROR):
        verdicts = judge.judge([item(f"answer {i}") for i in range(10)])
    assert server.calls == 3 * 2
    assert all(v.correct is None for v in verdicts)
    errors = [v.error for v in verdicts]
    assert sum(e.startswith("gave up after 2 attempts") for e in errors) == 3
    assert sum(e.startswith("not sent:") and "failed 3 requests in a row" in e for e in errors) == 7
    assert "stopped judging" in caplog.text and "--rejudge" in caplog.text
    s = judge.stats()
    assert (s["failures"], s["not_sent"], s["unjudged"]) == (3, 7, 10)
    # stopped for good: a later batch is not sent either; nothing was cached, so a new judge asks again
    server.default = "correct"
    assert judge.judge([item("a red star")])[0].error.startswith("not sent")
    assert server.calls == 6
    assert make_judge(server, tmp_path).judge([item("answer 0")])[0].correct is False
    assert server.calls == 7


def test_a_reply_resets_the_run_of_failures(server, tmp_path):
    server.faults += ["500", "500", "correct", "500", "500", "correct", "500", "500"]
    judge = make_judge(server, tmp_path, concurrency=1, max_retries=0)
    verdicts = judge.judge([item(f"answer {i}") for i in range(8)])
    assert server.calls == 8 and judge.stats()["not_sent"] == 0
    assert [v.correct is None for v in verdicts].count(True) == 6


def test_a_dead_endpoint_is_given_up_on_quickly(tmp_path):
    server = JudgeServer().start()
    url = server.base_url
    server.stop()
    # the defaults (8 at a time, max_retries 5) but a short backoff: 9ce8be9 made 16 x 6 attempts (62 s)
    judge = LLMJudge(base_url=url, model="judge-test", api_key=KEY, cache_dir=tmp_path, backoff=0.01)
    verdicts = judge.judge([item(f"answer {i}") for i in range(16)])
    s = judge.stats()
    assert all(v.correct is None for v in verdicts)
    # sent: at most the two failures before the third and the 8 in flight when it came; the rest never
    assert 3 <= s["failures"] <= 2 + 8 and s["not_sent"] == 16 - s["failures"]
    assert s["retries"] <= 2 * s["failures"]  # connect_retries, not max_retries, when nothing answers


@pytest.mark.parametrize("reply,correct", [
    ("The answer is yes.", True), ("Answer: no", False), ("**Yes**, it is correct", True),
    ("<think>The label is red star and the answer names a red star.</think>\n\nYes", True),
])
def test_replies_with_the_verdict_anywhere(server, tmp_path, reply, correct):
    server.reply = reply
    v = make_judge(server, tmp_path).judge([item("a red star")])[0]
    assert (v.correct, v.error) == (correct, None)


def test_default_max_tokens_leaves_room_to_reason_and_a_cut_reply_says_so(server, tmp_path):
    server.reply = "<think>The answer names a red star; the label is"
    server.finish_reason = "length"
    v = make_judge(server, tmp_path).judge([item("a red star")])[0]
    assert server.bodies[-1]["max_tokens"] == 512
    assert v.correct is None and "cut at max_tokens=512" in v.error and "finish_reason 'length'" in v.error


def test_logprobs_decide_by_the_likelier_of_yes_and_no(server, tmp_path):
    server.reply = "The"  # the text decides nothing: the verdicts come from the log-probabilities
    judge = make_judge(server, tmp_path, decide="logprobs")
    verdicts = judge.judge([item("a red star"), item("a blue circle")])
    assert [v.correct for v in verdicts] == [True, False]
    body = server.bodies[-1]
    assert (body["logprobs"], body["top_logprobs"], body["max_tokens"]) == (True, 20, 1)
    assert verdicts[0].raw["logprobs"] == {"yes": -0.05, "no": -3.9}
    assert (judge.identity()["decide"], judge.identity()["max_tokens"]) == ("logprobs", 1)
    with pytest.raises(JudgeError, match="generate, logprobs"):
        make_judge(server, tmp_path, decide="logits")


def test_logprobs_fall_back_to_the_text_where_the_server_gives_none(server, tmp_path):
    server.logprobs_supported = False
    verdicts = make_judge(server, tmp_path, decide="logprobs").judge([item("a red star"), item("a blue circle")])
    assert [v.correct for v in verdicts] == [True, False]
    assert "logprobs" not in verdicts[0].raw


def test_azure_style_base_url_keeps_its_query_and_a_header_carries_the_key(server, tmp_path):
    base = f"http://127.0.0.1:{server.port}/openai/deployments/judge?api-version=2024-02-01"
    server.reply = f"yes, {KEY}"  # a server echoing the header: the record must not hold it
    judge = make_judge(server, tmp_path, base_url=base, api_key=None, headers={"api-key": KEY})
    v = judge.judge([item("a red star")])[0]
    assert v.correct is True and v.raw["reply"] == "yes, ***"
    assert server.paths == ["/openai/deployments/judge/chat/completions?api-version=2024-02-01"]
    assert server.headers[-1]["api-key"] == KEY and server.authorization == [None]
    assert judge.identity()["base_url"] == base and KEY not in json.dumps(judge.identity())


def test_a_key_redacted_in_a_written_config_is_never_sent(server, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_API_KEY, KEY)
    make_judge(server, tmp_path, api_key=REDACTED).judge([item("a red star")])
    assert server.authorization == [f"Bearer {KEY}"]  # the environment's key, not "<redacted>"
    with pytest.raises(JudgeError, match="judge_options.llm.headers.api-key=VALUE"):
        make_judge(server, tmp_path, headers={"api-key": REDACTED})


# ---------------------------------------------------------------- the real CLI against a dead endpoint: exit code 3


@pytest.fixture
def dead_endpoint(monkeypatch, tmp_path):
    """A judge endpoint configured in the environment with nothing listening on its port; the server that can come
    back there: ``JudgeServer(port=...)``."""
    server = JudgeServer().start()
    port = server.port
    server.stop()
    monkeypatch.setenv(ENV_BASE_URL, f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv(ENV_MODEL, "judge-test")
    monkeypatch.setenv("UNFORGET_JUDGE_CACHE", str(tmp_path / "judge-cache"))
    return port


@pytest.mark.usefixtures("one_thread")
def test_eval_against_a_dead_endpoint_exits_3_and_the_printed_rejudge_fills_it_in(model_dir, dead_endpoint, tmp_path,
                                                                                  capsys):
    from unforget.cli import main

    out = tmp_path / "run"
    rc = main(["eval", "--model", str(model_dir), "--device", "cpu", "--datasets", "ft-colours-vqa", "--split",
               "train", "--limit", "6", "--batch-size", "3", "--max-new-tokens", "2", "--judges", "llm", "--out",
               str(out), "judge_options.llm.backoff=0.01"])
    assert rc == 3  # 9ce8be9: 0, every verdict failed and not a word about it
    records = read_jsonl(out / "samples.jsonl")
    assert len(records) == 6 and all(r["correct"] is None for r in records)  # unjudged, never wrong
    assert all(r["judgements"]["llm"]["error"].startswith(("gave up", "not sent")) for r in records)
    text = capsys.readouterr().out
    command = f"unforget eval --rejudge --out {out}"
    assert "6 verdicts unjudged" in text and command in text
    # the endpoint is back where it was: the printed command judges every answer, without generating again
    with JudgeServer(port=dead_endpoint) as server:
        assert main(command.split()[1:]) == 0
        assert server.calls == len({r["answer"] for r in records})
    again = read_jsonl(out / "samples.jsonl")
    assert all(r["correct"] is not None for r in again)
    assert [r["answer"] for r in again] == [r["answer"] for r in records]
    assert "verdicts unjudged" not in capsys.readouterr().out


def test_judge_validate_against_a_dead_endpoint_exits_3(dead_endpoint, tmp_path, capsys):
    from unforget.cli import main

    out = tmp_path / "validate"
    rc = main(["judge", "validate", "--gold", "digits", "--judges", "exact,llm", "--resamples", "50", "--out",
               str(out), "--judge-option", "llm.backoff=0.01"])
    assert rc == 3
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["judges"]["llm"]["unjudged"] == doc["n"] and doc["judges"]["exact"]["unjudged"] == 0
    assert doc["judges"]["llm"]["identity"]["base_url"] == f"http://127.0.0.1:{dead_endpoint}/v1"
    assert f"{doc['n']} verdicts unjudged" in capsys.readouterr().out


STUDY = """name: dead-judge
model: {{name: {model}}}
train: {{dataset: ft-colours-vqa, split: train, limit: 4, epochs: 1, batch_size: 4}}
methods:
  - {{name: projector, method: projector, lr: 1.0e-2}}
eval: {{datasets: [ft-colours-vqa], split: train, limit: 2, batch_size: 2, max_new_tokens: 2, judges: [llm],
        judge_options: {{llm: {{backoff: 0.01}}}}}}
probe: {{enabled: false}}
alignment_limit: 0
"""


@pytest.mark.usefixtures("one_thread")
def test_study_against_a_dead_endpoint_exits_3_with_the_rejudge_command(model_dir, dead_endpoint, tmp_path, capsys):
    from unforget.cli import main

    config = tmp_path / "emt.yaml"
    config.write_text(STUDY.format(model=model_dir))
    out = tmp_path / "study"
    assert main(["study", "emt", "-c", str(config), "--out", str(out)]) == 3
    records = [r for p in out.rglob("samples.jsonl") for r in read_jsonl(p)]
    assert records and all(r["correct"] is None for r in records)
    text = capsys.readouterr().out
    assert f"{len(records)} verdicts unjudged" in text and f"unforget eval --rejudge --out {out}" in text
