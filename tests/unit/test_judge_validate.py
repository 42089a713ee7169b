"""Judges against hand-labelled verdicts: accuracy and kappa on hand-computed cases, gold-file errors, the CLI."""

import json

import pytest

from unforget.cli import main
from unforget.errors import DataError
from unforget.evaluation.judges.base import Verdict
from unforget.evaluation.judges.llm import ENV_BASE_URL, ENV_LOCAL_MODEL, ENV_MODEL
from unforget.evaluation.judges.validate import (
    GoldAnswer,
    build_available_judges,
    find_gold_file,
    read_gold,
    score_judge,
    validate_judges,
)
from unforget.stats import wilson_interval


def gold(correct):
    return [GoldAnswer(id=f"g{i}", dataset="digits", question="q", answer=f"a{i}", reference="1", correct=c,
                       where=f"f, line {i}") for i, c in enumerate(correct)]


def verdicts(correct):
    return [Verdict(prediction=None, correct=c, judge="t") for c in correct]


def test_accuracy_and_kappa_by_hand():
    human = [True, True, True, True, False, False, False, False]
    said = [True, True, True, False, False, False, False, True]
    v = score_judge("t", {}, gold(human), verdicts(said), n_resamples=200)
    # agreement 6/8; chance agreement 0.5*0.5 + 0.5*0.5 = 0.5; kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5
    assert v.accuracy.value == pytest.approx(0.75)
    expected = wilson_interval(6, 8)
    assert (v.accuracy.low, v.accuracy.high) == pytest.approx((expected.low, expected.high))
    assert v.kappa.value == pytest.approx(0.5)
    assert v.kappa.low <= 0.5 <= v.kappa.high
    assert (v.false_accepts, v.false_rejects) == (1, 1)
    assert sorted(d["id"] for d in v.disagreements) == ["g3", "g7"]


def test_unjudged_answers_are_counted_apart_never_as_disagreement():
    human = [True, False, True, False]
    said = [True, None, None, False]
    v = score_judge("t", {}, gold(human), verdicts(said), n_resamples=100)
    assert (v.n, v.judged, v.unjudged) == (4, 2, 2)
    assert v.accuracy.value == 1.0 and v.kappa.value == pytest.approx(1.0)
    none = score_judge("t", {}, gold(human), verdicts([None] * 4))
    assert none.accuracy is None and none.kappa is None and none.unjudged == 4


def test_kappa_undefined_when_both_raters_give_one_label():
    v = score_judge("t", {}, gold([True] * 3), verdicts([True] * 3), n_resamples=50)
    assert v.accuracy.value == 1.0
    assert v.kappa.to_dict()["value"] is None  # NaN -> null in JSON


def write(tmp_path, *lines):
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"dataset": "digits", "answer": "It is a seven.", "reference": "7", "correct": true}'


@pytest.mark.parametrize("line, message", [
    ('{"dataset": "digits", "answer": "7", "reference": "7"', "not valid JSON"),
    ('["digits", "7"]', "expected a JSON object"),
    ('{"dataset": "digits", "answer": "7", "reference": "7"}', "'correct' must be true or false"),
    ('{"dataset": "digits", "answer": "7", "reference": "7", "correct": "yes"}', "'correct' must be true or false"),
    ('{"dataset": "digits", "answer": 7, "reference": "7", "correct": true}', "'answer' must be"),
    ('{"dataset": "digits", "answer": "7", "correct": true}', "'reference' (a class name) or 'label'"),
    ('{"dataset": "digits", "answer": "7", "label": 12, "correct": true}', "not a class index"),
    ('{"dataset": "digits", "answer": "7", "reference": "seven", "correct": true}', "is not a class of dataset"),
    ('{"dataset": "digits", "answer": "7", "reference": "7", "label": 3, "correct": true}', "disagree"),
    ('{"answer": "7", "reference": "7", "correct": true}', "no 'dataset' field"),
    ('{"dataset": "digits", "answer": "7", "reference": "7", "correct": true, "verdict": 1}', "unknown field"),
    ('{"dataset": "digitz", "answer": "7", "reference": "7", "correct": true}', "Did you mean 'digits'"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, "# comment", GOOD, "", line)
    with pytest.raises(DataError) as err:
        read_gold(path)
    assert f"{path}, line 4" in str(err.value)
    assert message in str(err.value)


def test_gold_fields_defaults_and_dataset_filter(tmp_path):
    path = write(tmp_path, GOOD,
                 '{"answer": "eight", "label": 8, "correct": true, "id": "mine"}',
                 '{"dataset": "shapes", "answer": "a disc", "reference": "circle", "correct": true}')
    only_digits = read_gold(path, dataset="digits")
    assert [g.id for g in only_digits] == ["gold:1", "mine"]
    assert only_digits[1].reference == "8" and only_digits[1].dataset == "digits"
    assert only_digits[0].question == "What is the number in the image?"
    with pytest.raises(DataError, match="no 'dataset' field"):
        read_gold(path)
    dupes = write(tmp_path, GOOD.replace("{", '{"id": "x", ', 1), GOOD.replace("{", '{"id": "x", ', 1))
    with pytest.raises(DataError, match="ids used more than once"):
        read_gold(dupes)


def test_shipped_gold_file_and_exact_judge():
    path = find_gold_file("digits")
    assert path.name == "gold-digits.jsonl"
    answers = read_gold(path)
    assert len(answers) >= 50 and {g.correct for g in answers} == {True, False}
    judges, unavailable = build_available_judges(["exact"])
    validation, by_judge = validate_judges(answers, judges, n_resamples=200)
    exact = validation.judges[0]
    # the exact judge misreads number words used as words ("one can see a 5") and self-corrections
    assert exact.accuracy.value == pytest.approx(1 - len(exact.disagreements) / len(answers))
    assert 0.85 < exact.accuracy.value < 1.0
    assert exact.false_accepts == 0 and exact.false_rejects == len(exact.disagreements)
    assert len(by_judge["exact"]) == len(answers)
    with pytest.raises(DataError, match="shipped: gold-digits"):
        find_gold_file("no-such-gold")


def test_cli_writes_metrics_and_lists_unavailable_judges(tmp_path, monkeypatch, capsys):
    for env in (ENV_BASE_URL, ENV_MODEL, ENV_LOCAL_MODEL):
        monkeypatch.delenv(env, raising=False)
    out = tmp_path / "run"
    assert main(["judge", "validate", "--gold", "digits", "--judges", "exact,llm", "--resamples", "100",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["judges"]) == {"exact"} and "llm" in doc["unavailable"]
    assert doc["config"]["gold_sha256"] and doc["n"] == len(read_gold(find_gold_file("digits")))
    exact = doc["judges"]["exact"]
    assert exact["accuracy"]["method"] == "wilson" and exact["kappa"]["value"] is not None
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == doc["n"] and set(records[0]["judgements"]) == {"exact"}
    text = capsys.readouterr().out
    assert "judges vs human verdicts" in text and "unavailable" in text


def test_cli_bad_option_is_an_error(tmp_path, capsys):
    assert main(["judge", "validate", "--gold", "digits", "--judge-option", "threshold=0.5"]) == 2
    assert "JUDGE.KEY=VALUE" in capsys.readouterr().out
