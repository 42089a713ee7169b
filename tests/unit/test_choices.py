"""Multiple-choice letter matchers against independent copies of the official rules, rotations, the option that
names the image's class, and the mischoice / CircularEval figures on hand-made records."""

import copy as cp
import os
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unforget.data.types import CHOICE_MATCHERS, ChoiceSettings, Sample
from unforget.evaluation.choices import (MATCHERS, choice_summary, class_letter, question_variants, read_letter,
                                         rotate, strict_letter, vlmevalkit_letter)
from unforget.evaluation.judges.base import JudgeItem
from unforget.evaluation.judges.exact import ExactJudge

# ---------------------------------------------------------------------------------------------------------------------
# Reference 1: VLMEvalKit's matcher, copied verbatim from open-compass/VLMEvalKit vlmeval/utils/matching_util.py at
# commit e8e78f05f3080fe28154f2130321f17951c3be94 (can_infer_option, can_infer_text, can_infer). Copyright 2023
# VLMEvalKit Authors, Apache License 2.0. Only the logger import is replaced by a stand-in (it logs only when the
# VERBOSE environment variable is set).


class logger:  # noqa: N801 - stands in for VLMEvalKit's module logger
    @staticmethod
    def info(msg):
        pass


_VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer, choices):
    verbose = os.environ.get('VERBOSE', 0)
    # Choices is a dictionary
    if 'Failed to obtain answer via API' in answer:
        return False

    reject_to_answer = [
        "Sorry, I can't help with images of people yet.", "I can't process this file.",
        "I'm sorry, but without the image provided", 'Cannot determine the answer'
    ]
    for err in reject_to_answer:
        if err in answer:
            return 'Z'

    def count_choice(splits, choices, prefix='', suffix=''):
        cnt = 0
        for c in choices:
            if prefix + c + suffix in splits:
                cnt += 1
        return cnt

    answer_mod = cp.copy(answer)
    chars = '.()[],:;!*#{}'
    for c in chars:
        answer_mod = answer_mod.replace(c, ' ')

    splits = [x.strip() for x in answer_mod.split()]
    count = count_choice(splits, choices)

    if count == 1:
        for ch in choices:
            if 'A' in splits and len(splits) > 3 and verbose:
                logger.info(f'A might be a quantifier in the string: {answer}.')
                return False
            if ch in splits and splits.index(ch) > (len(splits) - 5):
                return ch
    elif count == 0 and count_choice(splits, {'Z', ''}) == 1:
        return 'Z'

    match = _VERBOSE_ANSWER_RE.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()

    return False


def can_infer_text(answer, choices):
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    assert isinstance(choices, dict)
    for k in choices:
        assert k in string.ascii_uppercase
        choices[k] = str(choices[k]).lower()
    cands = []
    for k in choices:
        if choices[k] in answer:
            cands.append(k)
    if len(cands) == 1:
        return cands[0]
    return False


def can_infer(answer, choices):
    answer = str(answer)
    copt = can_infer_option(answer, choices)
    return copt if copt else can_infer_text(answer, choices)


def vlmevalkit_reference(answer, options):
    """VLMEvalKit under its exact_matching policy: the letter, or None for False / 'Z' (scored wrong)."""
    found = can_infer(answer, dict(options))  # can_infer_text lower-cases the dict it is given: pass a copy
    return None if found in (False, "Z") else found


# ---------------------------------------------------------------------------------------------------------------------
# Reference 2: the 2x2 paper's rule (arXiv 2603.14493), copied from lihe50hz/MLLM-Forgetting
# evaluators/mix_cls_result_matcher.py at commit 54a51835b7364982da23efcab71b8cc72a5521f0, the lines that clean the
# prediction and decide "correct" (the label is the right letter, upper-cased there as here).


def paper_correct(predict_raw, label):
    predict = str(predict_raw).strip()
    if ":" in predict:
        predict = predict.split(":")[-1].strip()
    predict = predict.upper()
    return label == predict or predict.startswith(f"{label}.")


# ---------------------------------------------------------------------------------------------------------------------

POSITIONS = {"A": "Fowler's position", "B": "Upright position", "C": "Lying position", "D": "Sitting position"}
ANIMALS = {"A": "cat", "B": "dog", "C": "owl", "D": "goldfinch"}

ANSWERS = [
    "A. Fowler's position", "B. Upright position", "The answer is C", "The answer is C.", "a", "A", "b", "(B)",
    "B)", "(C) Lying position", "I think it is B. Upright", "Fowler's position", "Upright position",
    "Answer: B", "Answer: b.", "answer: D. Sitting", "The correct answer is **D**. Here's why: the man sits.",
    "B. because the man in the picture is standing fully upright next to the bed", "A or B", "A and C", "",
    "Z", "Cannot determine the answer", "Sorry, I can't help with images of people yet.", "D.", "d.", "D:",
    "option C", "C, Lying position", "[D]", "**A**", "It is a cat.", "cat", "goldfinch", "a dog and a cat",
    "The bird is an owl", "owl", "I see a goldfinch on a branch, so D", "None of these", "A. cat",
    "The image shows a dog", "DOG", "Failed to obtain answer via API", "B.dog", "E", "The answer is E",
]


@pytest.mark.parametrize("options", [POSITIONS, ANIMALS], ids=["positions", "animals"])
def test_vlmevalkit_matcher_reads_every_answer_as_vlmevalkit_does(options):
    for answer in ANSWERS:
        assert vlmevalkit_letter(answer, options) == vlmevalkit_reference(answer, options), answer


@pytest.mark.parametrize("options", [POSITIONS, ANIMALS], ids=["positions", "animals"])
def test_strict_matcher_is_the_2x2_papers_rule(options):
    for answer in ANSWERS:
        letter = strict_letter(answer, options)
        for label in options:
            assert (letter == label) == paper_correct(answer, label), (answer, label)


@pytest.mark.parametrize(("answer", "vlmevalkit", "strict"), [
    ("A. Fowler's position", "A", "A"),  # the letter A is not the article "a" under either
    ("B. Upright position", "B", "B"),
    ("The answer is C", "C", None),  # VLMEvalKit reads it; the paper's rule does not
    ("a", None, "A"),  # lower-case: a word to VLMEvalKit, the letter to the paper (it upper-cases)
    ("(B)", "B", None),
    ("I think it is B. Upright", "B", None),
    ("Upright position", "B", None),  # option text only
    ("Answer: B", "B", "B"),
    ("The correct answer is **D**. Here's why: the man sits.", "D", None),
    ("Cannot determine the answer", None, None),
])
def test_named_cases_under_both_matchers(answer, vlmevalkit, strict):
    assert read_letter(answer, POSITIONS, "vlmevalkit") == vlmevalkit
    assert read_letter(answer, POSITIONS, "strict") == strict


@pytest.mark.parametrize("labels", [(), tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")], ids=["reference-only", "letters"])
def test_the_exact_judge_reads_an_opening_option_letter_a(labels):
    """The bug: the exact judge read "A. Fowler's position" as no label (the "a" normalised away as an article), or,
    against the 26 letters, as "S" (from "Fowler's"), while "B. Upright position" was B."""
    items = [JudgeItem("q", "A. Fowler's position", "A", labels), JudgeItem("q", "B. Upright position", "B", labels),
             JudgeItem("q", "(A) Fowler's position", "A", labels), JudgeItem("q", "A. Fowler's position", "B", labels)]
    verdicts = ExactJudge().judge(items)
    assert [v.prediction for v in verdicts][:3] == ["A", "B", "A"]
    assert [v.correct for v in verdicts] == [True, True, True, False]


def test_matcher_names_are_the_ones_the_formats_accept():
    assert tuple(MATCHERS) == CHOICE_MATCHERS


def test_rotation_moves_each_option_up_one_letter_and_the_answer_with_it():
    options = {"A": "cat", "B": "dog", "C": "owl"}
    assert rotate(options, "B", 0) == (options, "B")
    assert rotate(options, "B", 1) == ({"A": "dog", "B": "owl", "C": "cat"}, "A")  # MMBench: B C A ... shift
    assert rotate(options, "B", 2) == ({"A": "owl", "B": "cat", "C": "dog"}, "C")
    for k in range(3):  # the right text stays right
        rotated, answer = rotate(options, "B", k)
        assert rotated[answer] == "dog"


def test_circular_variants_ask_every_rotation_and_keep_the_class_option():
    s = Sample("q1", question="full prompt", answer="A",
               meta={"stem": "Which bird?", "options": {"A": "owl", "B": "goldfinch", "C": "crow", "D": "jay"},
                     "hint": None, "post_prompt": "Letter only.", "image_class": "Goldfinch"})
    once = question_variants(s, ChoiceSettings())
    assert [v.prompt for v in once] == ["Which bird?\nA. owl\nB. goldfinch\nC. crow\nD. jay\nLetter only."]
    every = question_variants(s, ChoiceSettings(circular=True))
    assert [v.answer for v in every] == ["A", "D", "C", "B"]
    assert [v.options[v.answer] for v in every] == ["owl"] * 4
    assert [v.class_letter for v in every] == ["B", "A", "D", "C"]
    assert [v.options[v.class_letter] for v in every] == ["goldfinch"] * 4


def test_class_letter_prefers_the_exact_option_then_a_whole_word():
    options = {"A": "a catfish", "B": "the cat on the mat", "C": "cat"}
    assert class_letter(options, "Cat") == "C"
    assert class_letter({"A": "a catfish", "B": "the cat on the mat"}, "cat") == "B"  # not inside "catfish"
    assert class_letter(options, "dog") is None
    assert class_letter(options, None) is None


def _record(correct, prediction, mischoice, rotations=None):
    choice = {"mischoice": mischoice, **({"rotations": rotations} if rotations is not None else {})}
    return {"id": "x", "correct": correct, "prediction": prediction, "choice": choice}


def test_mischoice_counts_only_questions_whose_class_option_is_wrong():
    records = [
        _record(False, "B", True),   # picked the class option
        _record(False, "C", False),  # wrong, another option
        _record(True, "A", False),   # right
        _record(False, None, False),  # no option read
        _record(True, "A", None),    # no image class (or the class option is the right one): not counted
        {"id": "s", "skipped": True},
    ]
    summary = choice_summary(records, ChoiceSettings(matcher="strict"))
    assert summary.n == 5 and summary.mischoice_eligible == 4
    assert summary.mischoice.value == pytest.approx(1 / 4) and summary.mischoice.n == 4
    assert summary.mischoice_of_errors.value == pytest.approx(1 / 3) and summary.mischoice_of_errors.n == 3
    assert summary.no_option.value == pytest.approx(1 / 5)
    assert summary.mischoice.low < 0.25 < summary.mischoice.high  # every figure carries an interval
    assert summary.first_rotation is None and summary.to_dict()["matcher"] == "strict"


def test_circular_figures_from_the_rotations():
    ok, bad = {"correct": True}, {"correct": False}
    records = [_record(True, "A", None, [ok, ok, ok]), _record(False, "A", None, [ok, bad, ok]),
               _record(False, "B", None, [bad, ok, ok])]
    summary = choice_summary(records, ChoiceSettings(circular=True))
    assert summary.first_rotation.value == pytest.approx(2 / 3)  # VLMEvalKit's circ0: the original order only
    assert summary.every_asking.value == pytest.approx(7 / 9) and summary.every_asking.n == 9
    assert summary.mischoice is None and summary.mischoice_eligible == 0


# answers built from the pieces that decide both rules: letters, option words, separators, "answer is", colons
_PIECES = st.sampled_from(["A", "B", "C", "D", "Z", "a", "b", "The", "answer", "is", "correct", "Fowler's", "position",
                           "Upright", "cat", "dog", "owl", "goldfinch", "I", "think", ".", ")", "(", ":", ",", "**",
                           "\n", " ", "Answer:", "option"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join), st.sampled_from([POSITIONS, ANIMALS]))
def test_both_matchers_agree_with_their_references_on_generated_answers(answer, options):
    assert vlmevalkit_letter(answer, options) == vlmevalkit_reference(answer, options)
    letter = strict_letter(answer, options)
    assert [letter == label for label in options] == [paper_correct(answer, label) for label in options]
