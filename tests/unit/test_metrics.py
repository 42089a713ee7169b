import math

import pytest

from unforget.evaluation.metrics import classification_metrics, prediction_concentration


def test_accuracy_per_class_confusion_and_unjudged():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", None, "a"]
    correct = [True, False, True, False, None]  # last one unjudged
    m = classification_metrics(refs, preds, correct, ["a", "b", "c"])
    assert m.n == 4 and m.unjudged == 1
    assert m.accuracy == pytest.approx(0.5)
    assert m.accuracy_low < 0.5 < m.accuracy_high
    assert m.per_class == {"a": 0.5, "b": 0.5}
    assert m.confusion == {"a": {"a": 1, "b": 1}, "b": {"b": 1, "<none>": 1}}
    assert m.no_class_rate == pytest.approx(0.25)


def test_collapse_shows_in_concentration():
    top1, top3, ent, norm = prediction_concentration(["3"] * 10, 10)
    assert (top1, top3, ent, norm) == (1.0, 1.0, 0.0, 0.0)
    top1, top3, ent, norm = prediction_concentration([str(i) for i in range(10)], 10)
    assert top1 == pytest.approx(0.1) and top3 == pytest.approx(0.3)
    assert ent == pytest.approx(math.log2(10)) and norm == pytest.approx(1.0)
    # answers naming no class do not count in the histogram
    assert prediction_concentration(["1", None, None, "1"], 10)[0] == 1.0


def test_leak_rate_and_topk():
    refs = ["x", "y", "x", "y"]
    m = classification_metrics(refs, ["x", "x", "y", "y"], [True, False, False, True], ["x", "y"],
                               leaks={"mnist": [False, True, True, False]}, ranks=[0, 1, 1, 0])
    assert m.leak_rates == {"mnist": 0.5}
    assert m.top_k == {"top1": 0.5}
    m3 = classification_metrics(["a", "b", "c", "d"], ["a", "a", "a", "a"], [True, False, False, False],
                                ["a", "b", "c", "d"], ranks=[0, 1, 2, 4])
    assert m3.top_k["top3"] == pytest.approx(0.75)
