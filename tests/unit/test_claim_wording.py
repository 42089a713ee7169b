"""Claims in plain words: the changed samples named as what happened to them (an answer that starts naming a
fine-tuning label is not "better"), every claim numbered once, and the test (and margin) beside each verdict.
Counts from the hand-written runs: tests/synthetic_emt_run.py (lora: 10 shapes answers start naming a digit,
base -> epoch 2) and tests/report_folders.py (2x2: lora lr 0.001 forgets 9 of 50 OOD-image answers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.report_folders import twobytwo_folder
from tests.synthetic_emt_run import make_run
from unforget.studies.emt import summarise_emt, write_emt_report
from unforget.studies.emt.page import CLAIM_TITLES
from unforget.studies.report import write_run_report


@pytest.fixture(scope="module")
def emt_run(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("emt") / "run")
    write_emt_report(run)
    return run


def _claim(summary: dict, claim_id: str, arm: str) -> dict:
    return next(c for c in summary["claims"] if c["id"] == claim_id and c["arm"] == arm)


def test_the_leak_claim_says_answers_started_naming_the_labels(emt_run):
    leak = _claim(summarise_emt(emt_run).to_dict(), "fine-tuning-labels-leak", "lora")
    assert (leak["test"]["n_discordant_b"], leak["test"]["n_discordant_c"]) == (0, 10)
    assert "(10 answers started naming a digits label; 0 stopped)" in leak["evidence"]
    assert "worse" not in leak["evidence"] and "better" not in leak["evidence"]


def test_accuracy_claims_say_turned_right_and_wrong(emt_run):
    summary = summarise_emt(emt_run).to_dict()
    early = _claim(summary, "early-fine-tuning-helps", "lora")  # base -> e1 on shapes: b=0, c=8
    assert "(8 answers turned right; 0 turned wrong)" in early["evidence"]
    versus = next(c for c in summary["claims"] if c["id"] == "projector-retains-more")  # b=0 c=9
    assert "(9 answers right only with projector; 0 right only with lora)" in versus["evidence"]


def test_claims_are_numbered_once_each_and_the_page_shows_the_test(emt_run):
    numbers = [re.match(r"\((\d+)\)", title).group(1) for title in CLAIM_TITLES.values()]
    assert numbers == ["1", "2", "3", "4"]
    page = (emt_run / "report.md").read_text()
    assert "| claim | arm | verdict | effect [interval] | test |" in page
    assert "| (3) more answers with fine-tuning labels | lora | held |" in page
    # the claim has a direction, so its one-sided test is printed: P(X >= 10 | 10, 1/2) = 0.5**10 = 0.00098
    assert "one-sided exact McNemar (delta > 0, alpha 0.05) p=0.00098 |" in page


def test_twobytwo_claims_name_the_changes_and_the_margin(tmp_path):
    run = twobytwo_folder(tmp_path / "2x2")
    write_run_report(run)
    page = (run / "report.md").read_text()
    # lora lr 0.001 against the base on the two OOD-image cells: 18 of 100 answers turned wrong, none right
    assert "(0 answers turned right; 18 turned wrong)" in page
    # a no-forgetting claim is a non-inferiority test: its margin and how it was decided are beside the verdict
    row = next(line for line in page.splitlines()
               if line.startswith("| no forgetting on OOD images | sweep/lora-lr0.001"))
    assert row.endswith("non-inferiority (margin 0.1; lower end of the 95% interval) |")
    assert "samples worse" not in page
