"""Preconditions of the 2x2, continual and tailor studies on hand-made records: a fine-tune that does not learn its
target, or a naive baseline that does not forget, fails its precondition; one that does holds it.

One-sided exact McNemar by hand: with b samples turned wrong and c turned right, p = P(X >= c), X ~ Bin(b + c, 1/2);
c = 5, b = 0 gives 1/32 = 0.031 (< 0.05, held), c = 4, b = 0 gives 1/16 = 0.0625 (failed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unforget.studies.continual.records import ContinualRun, StepRecords, StrategyRecords, Task
from unforget.studies.continual.summary import continual_preconditions
from unforget.studies.preconditions import Precondition, Preconditions, all_of, any_of, combined_held, paired_change
from unforget.studies.tailor.summary import EvalFacts, Evaluation, TailorStudyRun, tailor_preconditions
from unforget.studies.twobytwo.config import CELL_KEYS, TARGET_CELL
from unforget.studies.twobytwo.records import RunRecords, TwoByTwoRun
from unforget.studies.twobytwo.summary import PRECONDITION_CLAIMS, twobytwo_preconditions


def _records(dataset: str, flags: list[bool]) -> list[dict]:
    return [{"dataset": dataset, "id": f"test/{i:05d}", "correct": f} for i, f in enumerate(flags)]


def _flags(right: int, n: int = 20) -> list[bool]:
    return [True] * right + [False] * (n - right)


# ------------------------------------------------------------------------------------------------- the pure part


def test_paired_change_one_sided_exact_mcnemar_matches_the_hand_computation():
    held = paired_change("x", "x", _flags(5), _flags(10), "positive", 0.05, "acc")
    assert held.held is True and held.p_value == pytest.approx(1 / 32)
    short = paired_change("x", "x", _flags(5), _flags(9), "positive", 0.05, "acc")
    assert short.held is False and short.p_value == pytest.approx(1 / 16)
    # the same change read the other way: a rise is no evidence of a fall (one-sided, not two-sided)
    assert paired_change("x", "x", _flags(5), _flags(10), "negative", 0.05, "acc").held is False
    assert paired_change("x", "x", _flags(10), _flags(5), "negative", 0.05, "acc").held is True
    assert "0.250 -> 0.500" in held.evidence and "n=20" in held.evidence


def test_paired_change_without_samples_is_not_measured_and_scores_use_the_bootstrap():
    assert paired_change("x", "x", [], [], "positive", 0.05, "acc").held is None
    up = paired_change("x", "x", [0.1] * 30, [0.6] * 30, "positive", 0.05, "CIDEr", scores=True)
    assert up.held is True and "paired bootstrap" in up.evidence
    flat = paired_change("x", "x", [0.1, 0.5] * 15, [0.5, 0.1] * 15, "positive", 0.05, "CIDEr", scores=True)
    assert flat.held is False


def test_combining_preconditions():
    yes, no, unknown = (Precondition("a", "a", v, "") for v in (True, False, None))
    assert combined_held([True, True]) is True and combined_held([True, None]) is None
    assert combined_held([None, False]) is False and combined_held([]) is None
    assert all_of("c", "c", [yes, unknown]).held is None and all_of("c", "c", [yes, no]).held is False
    assert any_of("c", "c", [no, yes]).held is True and any_of("c", "c", [no, no]).held is False
    assert any_of("c", "c", [no, unknown]).held is None
    doc = Preconditions([yes, no]).to_dict()
    assert doc["held"] is False and [c["held"] for c in doc["checks"]] == [True, False]


# ------------------------------------------------------------------------------------------------- 2x2


def _twobytwo(target_after: int, sweep_after: list[int]) -> TwoByTwoRun:
    names = {c: c for c in CELL_KEYS}
    base = {c: _records(c, _flags(10)) for c in CELL_KEYS}

    def run(name: str, kind: str, target: int, ratio: float | None = None) -> RunRecords:
        records = {c: _records(c, _flags(target if c == TARGET_CELL else 10)) for c in CELL_KEYS}
        return RunRecords(name, {"kind": kind, "ratio": ratio, "method": {"name": "full"}, "lr": 1e-3}, None, True,
                          records)

    runs = [run(f"sweep/full-{i}", "sweep", a) for i, a in enumerate(sweep_after)]
    runs += [run("hybrid/r0", "hybrid", target_after, 0.0), run("hybrid/r0.5", "hybrid", 20, 0.5)]
    return TwoByTwoRun(Path("."), {}, names, 0.05, 0.1, base, True, runs, names)


def test_twobytwo_target_that_does_not_improve_fails_the_precondition():
    # the shipped tiny config's failure: the task-alone run ends where the base started (gain 0.000)
    pre = twobytwo_preconditions(_twobytwo(target_after=10, sweep_after=[10, 10]))
    assert pre.get("target-gain").held is False and pre.get("sweep-learns-target").held is False
    assert pre.held is False


def test_twobytwo_target_that_improves_holds_and_one_learning_sweep_run_is_enough():
    pre = twobytwo_preconditions(_twobytwo(target_after=16, sweep_after=[10, 9, 17]))
    assert pre.get("target-gain").held is True and pre.get("sweep-learns-target").held is True
    assert pre.to_dict()["held"] is True
    assert set(PRECONDITION_CLAIMS) == {"target-gain", "sweep-learns-target"}


# ------------------------------------------------------------------------------------------------- continual


def _continual(matrix: list[list[int]], base: list[int]) -> ContinualRun:
    """``matrix[i][j]``: right answers (of 20) on task j after step i; ``base[j]``: the base model's."""
    tasks = [Task(j, f"t{j}", f"t{j}", f"t{j}") for j in range(len(base))]
    steps = [StepRecords(i, Path("."), True, {t.dataset: _records(t.dataset, _flags(row[j]))
                                              for j, t in enumerate(tasks)}) for i, row in enumerate(matrix)]
    return ContinualRun(Path("."), {}, tasks, 0.05, 200, True,
                        {t.dataset: _records(t.dataset, _flags(base[j])) for j, t in enumerate(tasks)},
                        [StrategyRecords("naive", "naive", {}, steps)])


def test_continual_no_task_learned_and_no_forgetting_fails_both():
    # the shipped tiny config's failure: nothing learnt, nothing forgotten
    pre = continual_preconditions(_continual([[10, 10, 10], [10, 10, 10], [9, 10, 10]], [10, 10, 10]))
    assert pre.get("tasks-learned").held is False and pre.get("naive-forgets").held is False


def test_continual_learning_and_forgetting_hold_and_one_unlearnt_task_fails():
    learnt = _continual([[18, 10, 10], [12, 18, 10], [6, 8, 18]], [10, 10, 10])
    pre = continual_preconditions(learnt)
    assert pre.get("tasks-learned").held is True and pre.get("naive-forgets").held is True
    # task 1 only gains 4 answers (p = 1/16): not shown to be learnt, so the whole precondition fails
    one_short = continual_preconditions(_continual([[18, 10, 10], [12, 14, 10], [6, 8, 18]], [10, 10, 10]))
    assert one_short.get("tasks-learned").held is False
    assert "t1" in one_short.get("tasks-learned").evidence


def test_continual_first_task_alone_falling_is_enough():
    # pooled: task 0 loses 8, task 1 gains 8 back -> BWT 0, but the first task's fall is significant
    pre = continual_preconditions(_continual([[18, 10, 10], [18, 10, 10], [10, 18, 18]], [10, 10, 10]))
    assert pre.get("naive-forgets").held is True


# ------------------------------------------------------------------------------------------------- tailor


def _evaluation(label: str, dataset: str, flags: list[bool]) -> Evaluation:
    return Evaluation(label, Path("."), True, {dataset: _records(dataset, flags)})


def _tailor(vqa_after: int) -> TailorStudyRun:
    base = _evaluation("base", "scenes-vqa", _flags(10))
    tuned = {"vqa": _evaluation("fine-tuned (vqa)", "scenes-vqa", _flags(vqa_after))}
    return TailorStudyRun(Path("."), "t", None, [], {"vqa": "scenes-vqa"}, 0.05, None, None, EvalFacts(), [],
                          True, True, base, tuned, [])


def test_tailor_finetune_below_the_base_fails_and_above_holds():
    # the shipped tiny config's failure: 0.47 vs 0.50 on its own target
    assert tailor_preconditions(_tailor(9)).get("finetunes-learn").held is False
    held = tailor_preconditions(_tailor(17)).get("finetunes-learn")
    assert held.held is True and "exact McNemar" in held.evidence


# ------------------------------------------------------------------------------------- verdicts held back, page


def test_a_failed_precondition_holds_back_only_the_claims_that_lean_on_it():
    from unforget.stats import check_claim, mcnemar_exact
    from unforget.studies.preconditions import hold_back

    check = check_claim("forgets", mcnemar_exact([True] * 10 + [False] * 10, [False] * 20), "negative")
    assert check.verdict == "held"
    pre = Preconditions([Precondition("learns", "the fine-tune learns its target", False, "0.50 -> 0.50")])
    depends = {"learns": ("forgets",)}
    held_back = hold_back(check, "forgets", pre, depends)
    assert held_back.verdict == "not shown" and held_back.held is None
    assert held_back.evidence.startswith("no verdict") and "the fine-tune learns its target" in held_back.evidence
    assert check.evidence in held_back.evidence  # the test's own numbers stay readable
    assert hold_back(check, "other-claim", pre, depends) is check  # not leaning on it: untouched
    ok = Preconditions([Precondition("learns", "the fine-tune learns its target", True, "0.50 -> 0.90")])
    assert hold_back(check, "forgets", ok, depends) is check
    unmeasured = Preconditions([Precondition("learns", "the fine-tune learns its target", None, "no sample")])
    assert hold_back(check, "forgets", unmeasured, depends) is check


def test_twobytwo_page_puts_preconditions_first_and_gives_no_verdict_when_nothing_was_learnt(tmp_path):
    from tests.report_folders import CELLS, twobytwo_folder
    from tests.unit.test_report_kinds import classification
    from tests.unit.test_report_kinds import write_jsonl
    from unforget.studies.report import write_run_report
    from unforget.studies.twobytwo.summary import summarise_twobytwo

    run = twobytwo_folder(tmp_path / "2x2")
    learnt = summarise_twobytwo(run)
    assert learnt.preconditions.get("sweep-learns-target").held is True
    verdicts = {c.check.verdict for c in learnt.claims if c.id == "no-ood-image-forgetting"}
    assert "not held" in verdicts  # lora lr 1e-3 forgets 9 of 25 OOD-image answers: judged
    # the same study where no sweep run gains anything on the target: the forgetting claims get no verdict
    for name in ("lora-lr0.001-e1", "full-lr0.001-e1"):
        sub = run / "sweep" / name
        rows = [r for c in CELLS for r in classification(c, 50, set(range(25)) if c == "T" else set(range(10)),
                                                          epoch=1)]
        write_jsonl(sub / "samples.jsonl", rows)
    flat = summarise_twobytwo(run)
    assert flat.preconditions.get("sweep-learns-target").held is False
    held_back = [c for c in flat.claims if c.id in PRECONDITION_CLAIMS["sweep-learns-target"]]
    assert held_back and all(c.check.verdict == "not shown" and c.check.evidence.startswith("no verdict")
                             for c in held_back)
    write_run_report(run)
    page = (run / "report.md").read_text()
    assert page.index("## Preconditions") < page.index("## Claims")
    assert "preconditions failed on this run" in page
