import pytest

from unforget.evaluation.judges.base import JudgeItem, normalise
from unforget.evaluation.judges.exact import ExactJudge

DIGITS = [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "text,expected",
    [("The Number is SEVEN.", "number is 7"), ("two circles", "2 circle"), ("boxes", "box"), ("an apple", "apple"),
     ("Café!", "cafe"), ("glass", "glass")],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


def judge(answer, reference, labels, synonyms=None):
    return ExactJudge().judge([JudgeItem("q", answer, reference, labels, synonyms or {})])[0]


def test_label_inside_a_sentence_and_number_words():
    v = judge("The number in the image is seven.", "7", DIGITS)
    assert (v.prediction, v.correct, v.confident) == ("7", True, True)


def test_wrong_label_is_wrong_not_missing():
    v = judge("It is a 3", "7", DIGITS)
    assert (v.prediction, v.correct) == ("3", False)


def test_no_label_named():
    v = judge("I cannot tell", "7", DIGITS)
    assert (v.prediction, v.correct, v.confident) == (None, False, False)


def test_two_labels_is_not_confident_first_wins():
    v = judge("either 1 or 7", "7", DIGITS)
    assert (v.prediction, v.confident) == ("1", False)


def test_longest_label_wins_over_its_part():
    labels = ["star", "red star", "blue star"]
    v = judge("a red star", "red star", labels)
    assert (v.prediction, v.correct, v.confident) == ("red star", True, True)


def test_synonyms_and_plurals():
    v = judge("Those are boxes", "square", ["square", "circle"], {"square": ["box"]})
    assert (v.prediction, v.correct) == ("square", True)


def test_label_must_be_a_whole_word():
    v = judge("scarf", "car", ["car", "cat"])
    assert v.prediction is None


@pytest.mark.parametrize("answer,expected", [("A", "A"), ("a.", "A"), ("The letter is A", "A"), ("It is a B", "B"),
                                             ("a capital letter", None), ("the", None)])
def test_article_labels_named_only_as_the_last_word(answer, expected):
    letters = [chr(ord("A") + i) for i in range(26)]
    v = judge(answer, "A", letters)
    assert v.prediction == expected
    assert v.correct == (expected == "A") and v.confident == (expected is not None)
