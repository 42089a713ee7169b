"""A study's preconditions: what must be true of its own run before its claims mean anything.

A claim such as "hybrid data keeps the target gain" says nothing when the fine-tune gained nothing, and "strategy S
forgets less than naive fine-tuning" says nothing when naive fine-tuning did not forget. Each study's summary
checks its preconditions on the run's own per-sample records and lists them in metrics.json under
``"preconditions"``; the report puts them first and holds back the verdicts that depend on a failed one.

``held`` is True when the run shows it (a one-sided test at the study's alpha), False when it does not (an effect
that is absent or too small to show at these sample counts fails the precondition just the same: the claims that
lean on it would be judged on nothing), None when nothing could be measured yet (no paired sample).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Sequence

from ..stats import ClaimCheck, mcnemar_exact, paired_bootstrap_test

Direction = Literal["positive", "negative"]


@dataclass(frozen=True)
class Precondition:
    """One precondition: ``id`` is stable (claims name it), ``name`` states it, ``evidence`` gives the numbers."""

    id: str
    name: str
    held: bool | None
    evidence: str
    p_value: float | None = None  # the one-sided test's p, when one was run

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "held": self.held, "evidence": self.evidence,
                "p_value": self.p_value}


@dataclass(frozen=True)
class Preconditions:
    """A study's preconditions, in the order the report shows them."""

    checks: list[Precondition]

    @property
    def held(self) -> bool | None:
        """True when every one held, False when any failed, otherwise None (some not measured yet)."""
        return combined_held([c.held for c in self.checks])

    def get(self, precondition_id: str) -> Precondition | None:
        return next((c for c in self.checks if c.id == precondition_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "checks": [c.to_dict() for c in self.checks]}


def combined_held(values: Sequence[bool | None]) -> bool | None:
    """All True -> True; any False -> False; otherwise (some None, or none at all) None."""
    if any(v is False for v in values):
        return False
    if values and all(v is True for v in values):
        return True
    return None


def paired_change(precondition_id: str, name: str, before: Sequence[bool] | Sequence[float],
                  after: Sequence[bool] | Sequence[float], direction: Direction, alpha: float, subject: str,
                  *, scores: bool = False, n_resamples: int = 2000) -> Precondition:
    """Held when ``after`` is above (``positive``) or below (``negative``) ``before`` on the same samples by a
    one-sided test at ``alpha``: exact McNemar on correct/incorrect flags, a paired bootstrap on ``scores``
    (CIDEr and other continuous per-sample scores). ``subject`` names the figure in the evidence."""
    if len(before) == 0:
        return Precondition(precondition_id, name, None, f"{subject}: no sample judged in both evaluations yet")
    if scores:
        test = paired_bootstrap_test([float(x) for x in before], [float(x) for x in after], alpha=alpha,
                                     n_resamples=n_resamples, seed=0)
        how = "paired bootstrap"
    else:
        test = mcnemar_exact([bool(x) for x in before], [bool(x) for x in after], alpha=alpha)
        how = "exact McNemar"
    p = test.one_sided_p(direction)
    held = p < alpha
    assert test.before is not None and test.after is not None
    word = "rose" if direction == "positive" else "fell"
    verdict = f"{word} (one-sided {how} p={p:.2g} < {alpha:g})" if held else \
        f"did not {'rise' if direction == 'positive' else 'fall'} significantly (one-sided {how} p={p:.2g}, " \
        f"alpha {alpha:g})"
    evidence = (f"{subject}: {test.before.value:.3f} -> {test.after.value:.3f}, change "
                f"{test.delta.format(3)}, {verdict}; n={len(before)}, {test.n_discordant_c} better, "
                f"{test.n_discordant_b} worse")
    return Precondition(precondition_id, name, held, evidence, p)


def all_of(precondition_id: str, name: str, parts: Sequence[Precondition]) -> Precondition:
    """One precondition that holds when each part holds (:func:`combined_held`); the evidence lists the parts."""
    if not parts:
        return Precondition(precondition_id, name, None, "nothing to check yet")
    evidence = "; ".join(f"[{'held' if p.held else 'failed' if p.held is False else 'not measured'}] {p.evidence}"
                         for p in parts)
    return Precondition(precondition_id, name, combined_held([p.held for p in parts]), evidence)


def any_of(precondition_id: str, name: str, parts: Sequence[Precondition]) -> Precondition:
    """One precondition that holds when some part holds; fails when every part failed; otherwise None."""
    if not parts:
        return Precondition(precondition_id, name, None, "nothing to check yet")
    values = [p.held for p in parts]
    held: bool | None = True if any(v is True for v in values) else False if all(v is False for v in values) \
        else None
    evidence = " / ".join(p.evidence for p in parts)
    return Precondition(precondition_id, name, held, evidence)


def hold_back(check: ClaimCheck, claim_id: str, preconditions: Preconditions,
              depends: Mapping[str, Sequence[str]]) -> ClaimCheck:
    """``check`` without a verdict ("not shown") when a precondition it leans on (``depends``: precondition id ->
    claim ids) failed on this run: the claim would be judged on nothing. The evidence says which precondition and
    keeps the test's own sentence after it."""
    failed = [pre for pre_id, claims in depends.items() if claim_id in claims
              for pre in [preconditions.get(pre_id)] if pre is not None and pre.held is False]
    if not failed or check.held is None and check.evidence.startswith("no verdict"):
        return check
    why = "; ".join(f"'{pre.name}' failed ({pre.evidence})" for pre in failed)
    return replace(check, held=None, verdict="not shown",
                   evidence=f"no verdict: this claim leans on a precondition that did not hold on this run: {why}. "
                            f"The test alone said: {check.evidence}")


__all__ = ["Precondition", "Preconditions", "all_of", "any_of", "combined_held", "hold_back",
           "paired_change"]
