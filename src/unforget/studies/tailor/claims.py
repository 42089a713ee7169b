"""The paper's headline checked against the summary: at sparsity <= 10% Model Tailor keeps >= 99% of the base
model on the original tasks and reaches >= 97% of the fine-tuned model on the target ("held" when the whole
interval clears the bar, "not held" when it lies wholly below, else "not shown")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ...reports.document import format_interval
from ...stats import ClaimCheck, Estimate, json_float
from .config import MULTI, HeadlineCheck
from ..preconditions import hold_back
from .summary import PRECONDITION_CLAIMS, HeadlineClaim, RunSummary, TailorSummary

HEADLINE_METHOD = "model-tailor"  # the method the paper's claims are about


def at_least(claim: str, estimate: Estimate | Mapping[str, Any] | None, bar: float, subject: str) -> ClaimCheck:
    """Verdict on "``subject`` is at least ``bar``" from an interval (an Estimate or, as metrics.json holds it,
    its ``to_dict()``): held when its low end clears the bar, not held when its high end is below it, otherwise
    not shown."""
    if isinstance(estimate, Mapping):
        estimate = Estimate.from_dict(estimate) if estimate.get("value") is not None else None
    elif estimate is not None and json_float(estimate.value) is None:
        estimate = None  # what metrics.json holds as null
    if estimate is None:
        return ClaimCheck(claim, None, "not shown", f"{subject} is undefined (no paired samples, or a reference "
                                                    "score of 0)")
    est = estimate
    text = (f"{subject} {100 * est.value:.1f}% [{100 * est.low:.1f}%, {100 * est.high:.1f}%] "
            f"({100 * est.confidence:.0f}% paired bootstrap interval, n={est.n})")
    # "keeps / reaches at least X%" is one-sided: the lower end of the interval decides (a test at alpha/2)
    method = f"lower end of the {100 * est.confidence:.0f}% interval against {100 * bar:g}%"
    if est.low >= bar:
        return ClaimCheck(claim, True, "held", f"{text}: the interval lies above {100 * bar:g}%", method=method)
    if est.high < bar:
        return ClaimCheck(claim, False, "not held", f"{text}: the interval lies below {100 * bar:g}%", method=method)
    return ClaimCheck(claim, None, "not shown", f"{text}: the interval crosses {100 * bar:g}%", method=method)


def _estimate_text(e: Estimate | None) -> str:
    return "-" if e is None else format_interval(e.value, e.low, e.high)


def group_claims(summary: TailorSummary, group: str, rows: list[RunSummary]) -> list[HeadlineClaim]:
    """The keep and reach claims of one group, checked at the largest Model Tailor sparsity within the bound."""
    head = summary.headline or HeadlineCheck()
    limit, keep, reach = float(head.sparsity), float(head.keep), float(head.reach)
    names = summary.names
    who = "every target at once" if group == MULTI else f"target {group}"
    keep_claim = (f"Model Tailor ({who}) at sparsity <= {100 * limit:g}% keeps >= {100 * keep:g}% of the base "
                  f"model's performance on the original tasks ({', '.join(names[d] for d in summary.original)})")
    reach_claim = (f"Model Tailor ({who}) at sparsity <= {100 * limit:g}% reaches >= {100 * reach:g}% of the "
                   "fine-tuned model's performance on the target task"
                   + ("s" if group == MULTI else ""))
    candidates = [r for r in rows if r.method == HEADLINE_METHOD and r.done and r.sparsity is not None
                  and r.sparsity <= limit + 1e-12]
    if not candidates:
        why = f"no finished model-tailor run at sparsity <= {100 * limit:g}% in this group"
        return [HeadlineClaim(group, "keep", ClaimCheck(keep_claim, None, "not shown", why)),
                HeadlineClaim(group, "reach", ClaimCheck(reach_claim, None, "not shown", why))]
    # the paper's operating point: the largest sparsity within the bound (one test, no search over the sweep)
    row = max(candidates, key=lambda r: r.sparsity or 0.0)
    at = f"at {100 * row.sparsity:g}% ({row.folder})"
    keep_check = at_least(keep_claim, row.retention.pooled, keep, f"retention {at}")
    reach_check = at_least(reach_claim, row.reach.pooled, reach, f"reach {at}")
    details_keep = [f"{names.get(d, d)}: {_estimate_text(e)}" for d, e in row.retention.per_dataset.items()]
    details_reach = [f"{t}: {_estimate_text(e)}" for t, e in row.reach.per_target.items()]
    return [HeadlineClaim(group, "keep", keep_check, row.sparsity, details_keep + row.retention.notes),
            HeadlineClaim(group, "reach", reach_check, row.sparsity, details_reach + row.reach.notes)]


def check_claims(summary: TailorSummary) -> TailorSummary:
    """``summary`` with its claims: keep and reach per group."""
    summary.claims = [replace(c, check=hold_back(c.check, c.id, summary.preconditions, PRECONDITION_CLAIMS))
                      for group, data in summary.groups.items() for c in group_claims(summary, group, data.runs)]
    return summary


__all__ = ["HEADLINE_METHOD", "at_least", "check_claims", "group_claims"]
