"""The continual study's claim, checked per strategy on the run's per-sample records: "strategy S forgets less than
naive sequential fine-tuning" (the paper's claim for the regularised and data-hybrid strategies).

On the samples of the earlier tasks, paired: per sample, forgetting is ``correct after its own task - correct after
the last`` (its mean is -BWT); the two strategies' values are compared with a paired bootstrap test
(`stats.check_claim`), and the accuracies after the last task with an exact McNemar test (a detail).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...reports.document import name_the_changes
from ...stats import ClaimCheck, check_claim, mcnemar_exact, paired_bootstrap_test
from .records import ContinualRun, StrategyRecords, correct_by_id, per_sample_forgetting

# strategies whose claim is the paper's: few-parameter / low-lr training and data-hybrid training forget less
PAPER_STRATEGIES = ("regularised", "replay")
CLAIM_ID = "forgets-less-than-naive"


@dataclass
class ForgetsLessClaim:
    """One strategy (``arm``, of registered ``strategy``) against naive fine-tuning (``compared_with``: None when
    the claim could not be tested)."""

    arm: str
    check: ClaimCheck
    paper_claim: bool  # the strategy is one the paper's claim is about
    strategy: str
    details: list[str] = field(default_factory=list)
    compared_with: str | None = None

    @property
    def id(self) -> str:
        return CLAIM_ID

    def to_dict(self) -> dict[str, Any]:
        return {"id": CLAIM_ID, "arm": self.arm, **self.check.to_dict(), "details": list(self.details),
                **({"compared_with": self.compared_with} if self.compared_with is not None else {}),
                "paper_claim": self.paper_claim, "strategy": self.strategy}


def check_claims(run: ContinualRun) -> list[ForgetsLessClaim]:
    """Every strategy but naive against the (first) naive one."""
    naive = next((a for a in run.strategies if a.strategy == "naive"), None)
    out = []
    for arm in run.strategies:
        if arm is naive:
            continue
        claim = (f"{arm.name} forgets less than naive sequential fine-tuning"
                 f"{f' ({naive.name})' if naive else ''}: lower per-sample forgetting (correct after its own task "
                 "minus correct after the last) on the earlier tasks")
        paper = arm.strategy in PAPER_STRATEGIES
        if naive is None:
            why = "the study has no naive strategy to compare with"
        elif len(run.tasks) < 2:
            why = "forgetting needs at least two tasks"
        elif not (arm.complete and naive.complete):
            why = "a strategy has not finished every task yet"
        else:
            out.append(_forgets_less(run, arm, naive, claim, paper))
            continue
        out.append(_not_shown(claim, why, arm, paper))
    return out


def _not_shown(claim: str, why: str, arm: StrategyRecords, paper: bool) -> ForgetsLessClaim:
    return ForgetsLessClaim(arm.name, ClaimCheck(claim, None, "not shown", why), paper, arm.strategy)


def _forgets_less(run: ContinualRun, arm: StrategyRecords, naive: StrategyRecords, claim: str,
                  paper: bool) -> ForgetsLessClaim:
    earlier = range(len(run.tasks) - 1)
    ours, theirs, details = [], [], []
    final_ours, final_theirs = [], []
    for j in earlier:
        f_arm, f_naive = per_sample_forgetting(run, arm, j), per_sample_forgetting(run, naive, j)
        ids = [i for i in f_naive if i in f_arm]
        ours += [f_arm[i] for i in ids]
        theirs += [f_naive[i] for i in ids]
        if ids:
            mean_naive, mean_arm = sum(f_naive[i] for i in ids) / len(ids), sum(f_arm[i] for i in ids) / len(ids)
            details.append(f"{run.tasks[j].label}: mean forgetting {naive.name} {mean_naive:.3f}, {arm.name} "
                           f"{mean_arm:.3f} (n={len(ids)})")
        name = run.tasks[j].dataset
        last_arm = correct_by_id(arm.steps[-1].records.get(name, []))
        last_naive = correct_by_id(naive.steps[-1].records.get(name, []))
        shared = [i for i in last_naive if i in last_arm]
        final_theirs += [last_naive[i] for i in shared]
        final_ours += [last_arm[i] for i in shared]
    if len(ours) < 2:
        return _not_shown(claim, "fewer than two samples were judged in every evaluation compared", arm, paper)
    test = replace(paired_bootstrap_test(theirs, ours, alpha=run.alpha, n_resamples=run.n_resamples, seed=0),
                   delta_of=f"{arm.name} - {naive.name}")
    check = name_the_changes(check_claim(claim, test, "negative",
                                         subject="mean per-sample forgetting on the earlier tasks"),
                             rose=f"{{n}} samples forgot more with {arm.name}", fell=f"{{n}} forgot less")
    if final_ours:
        final = mcnemar_exact(final_theirs, final_ours, alpha=run.alpha)
        details.append(f"accuracy on the earlier tasks after the last task: {naive.name} {final.before}, "
                       f"{arm.name} {final.after} (difference {final.delta.format(3)}, exact McNemar "
                       f"p={final.p_value:.2g}, n={len(final_ours)})")
    return ForgetsLessClaim(arm.name, check, paper, arm.strategy, details, compared_with=naive.name)
