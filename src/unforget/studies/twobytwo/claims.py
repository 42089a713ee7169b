"""The paper's claims (arXiv 2603.14493) checked on a 2x2 run's own samples, as `stats.check_claim` verdicts on
exact McNemar tests: "constraining trainable parameters or lowering the learning rate prevents forgetting on OOD
images" on every sweep run (and pair of runs), and "hybrid data recovers the ID-image + OOD-text cell while the
target gain stays" on every hybrid run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ...reports.document import name_the_changes
from ...stats import ClaimCheck, PairedTest, Verdict, check_claim, forgetting_delta, mcnemar_exact
from .config import CELL_LABELS, OOD_IMAGE_CELLS, TARGET_CELL
from .records import Record, RunRecords, TwoByTwoRun, paired_flags, pooled


@dataclass(frozen=True)
class ClaimResult:
    """One claim checked on the runs it names; ``id`` says which of the paper's claims it is."""

    id: str
    runs: list[str]
    check: ClaimCheck
    details: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.check.verdict

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "runs": list(self.runs), **self.check.to_dict(), "details": list(self.details)}


def check_claims(run: TwoByTwoRun) -> list[ClaimResult]:
    """Every claim on every sweep run, adjacent pair of runs and hybrid run it applies to."""
    sweep = [r for r in run.runs if r.kind == "sweep"]
    out = [_claim_no_ood_forgetting(run, r) for r in sweep]
    # lower learning rate, same method and epochs: adjacent pairs
    groups: dict[tuple[str, int], list[RunRecords]] = {}
    for r in sweep:
        groups.setdefault((r.method_name, r.epochs), []).append(r)
    for (_, _), members in groups.items():
        members = sorted([m for m in members if m.lr is not None], key=lambda m: m.lr)  # type: ignore[arg-type,return-value]
        for low, high in zip(members, members[1:]):
            out.append(_claim_forgets_less(
                run, low, high, "lower-lr-forgets-less",
                f"Lowering the learning rate ({low.method_name}, {high.epochs} epoch(s): {high.lr:g} -> {low.lr:g}) "
                "reduces forgetting on OOD images"))
    # fewer trainable parameters, same learning rate and epochs: adjacent pairs by parameter count
    by_lr: dict[tuple[float | None, int], list[RunRecords]] = {}
    for r in sweep:
        by_lr.setdefault((r.lr, r.epochs), []).append(r)
    for (lr, epochs), members in by_lr.items():
        counted = sorted([m for m in members if m.trainable_parameters is not None],
                         key=lambda m: m.trainable_parameters)  # type: ignore[arg-type,return-value]
        for fewer, more in zip(counted, counted[1:]):
            if fewer.trainable_parameters == more.trainable_parameters:
                continue
            lr_text = f"lr {lr:g}" if lr is not None else "default lr"
            out.append(_claim_forgets_less(
                run, fewer, more, "fewer-parameters-forget-less",
                f"Fewer trainable parameters ({fewer.method_name}, {fewer.trainable_parameters:,} vs "
                f"{more.method_name}, {more.trainable_parameters:,}; {lr_text}, {epochs} epoch(s)) reduce "
                "forgetting on OOD images"))
    out += _hybrid_claims(run)
    return out


def _check(claim: str, before: list[bool], after: list[bool], alpha: float, expect: str, subject: str,
           delta_of: str, margin: float = 0.0, rose: str = "{n} answers turned right",
           fell: str = "{n} turned wrong") -> ClaimCheck:
    """`stats.check_claim` on an exact McNemar test of ``after`` vs ``before`` (delta = after - before); ``rose`` /
    ``fell`` say in words what the samples that changed did."""
    test: PairedTest = replace(mcnemar_exact(before, after, alpha=alpha), delta_of=delta_of)
    return name_the_changes(check_claim(claim, test, expect, subject=subject, margin=margin),  # type: ignore[arg-type]
                            rose, fell)


def _not_shown(claim: str, why: str) -> ClaimCheck:
    return ClaimCheck(claim=claim, held=None, verdict="not shown", evidence=why)


def _cells_text(cells: Sequence[str]) -> str:
    return " and ".join(CELL_LABELS[c] for c in cells)


def _per_cell_details(a: dict[str, list[Record]], b: dict[str, list[Record]], cells: Sequence[str], alpha: float,
                      what: str) -> list[str]:
    lines = []
    for c in cells:
        x, y = paired_flags(a.get(c, []), b.get(c, []))
        if x:
            t = mcnemar_exact(x, y, alpha=alpha)
            lines.append(f"{CELL_LABELS[c]}: {what} {t.before} -> {t.after}, change {t.delta.format(3)}, "
                         f"exact McNemar p={t.p_value:.2g} (n={len(x)})")
    return lines


def _params(r: RunRecords) -> str:
    n = r.trainable_parameters
    return f"{n:,} trainable parameters" if n is not None else "trainable parameters unknown"


def _claim_no_ood_forgetting(run: TwoByTwoRun, r: RunRecords) -> ClaimResult:
    claim = (f"{r.name} ({r.method_name}, lr {r.lr:g}, {_params(r)}) does not forget on OOD images: accuracy "
             f"falls by at most {run.margin:g}") if r.lr is not None else f"{r.name} does not forget on OOD images"
    before, after = paired_flags(pooled(run.base, OOD_IMAGE_CELLS), pooled(r.records, OOD_IMAGE_CELLS))
    if not before:
        return ClaimResult("no-ood-image-forgetting", [r.name],
                           _not_shown(claim, "no OOD-image sample judged in both the base and this run yet"))
    check = _check(claim, before, after, run.alpha, "not_worse", f"accuracy on {_cells_text(OOD_IMAGE_CELLS)}",
                   f"{r.name} - base", margin=run.margin)
    return ClaimResult("no-ood-image-forgetting", [r.name], check,
                       _per_cell_details(run.base, r.records, OOD_IMAGE_CELLS, run.alpha, "accuracy"))


def _claim_forgets_less(run: TwoByTwoRun, constrained: RunRecords, free: RunRecords, claim_id: str,
                        claim: str) -> ClaimResult:
    """The constrained run keeps more OOD-image accuracy than the free one (paired on the same samples)."""
    before, after = paired_flags(pooled(free.records, OOD_IMAGE_CELLS), pooled(constrained.records, OOD_IMAGE_CELLS))
    runs = [constrained.name, free.name]
    if not before:
        return ClaimResult(claim_id, runs, _not_shown(claim, "the two runs share no judged OOD-image sample yet"))
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on {_cells_text(OOD_IMAGE_CELLS)}, {free.name} vs {constrained.name}",
                   f"{constrained.name} - {free.name}", rose=f"{{n}} answers right only with {constrained.name}",
                   fell=f"{{n}} right only with {free.name}")
    details = _per_cell_details(free.records, constrained.records, OOD_IMAGE_CELLS, run.alpha, "accuracy")
    for r in (constrained, free):
        x, y = paired_flags(pooled(run.base, OOD_IMAGE_CELLS), pooled(r.records, OOD_IMAGE_CELLS))
        if x:
            f = forgetting_delta(x, y, alpha=run.alpha)
            details.append(f"{r.name}: forgetting on OOD images (base - tuned) {f.delta.format(3)}, "
                           f"p={f.p_value:.2g}")
    return ClaimResult(claim_id, runs, check, details)


def _hybrid_claims(run: TwoByTwoRun) -> list[ClaimResult]:
    hybrid = [r for r in run.runs if r.kind == "hybrid"]
    plain = next((r for r in hybrid if r.ratio == 0.0), None)
    if plain is None:
        return []
    out = []
    cell = "id_image_ood_text"
    claim = (f"Fine-tuning on the task alone ({plain.name}) forgets {CELL_LABELS[cell]} (task-specific overfitting): "
             "accuracy falls from the base model")
    before, after = paired_flags(run.base.get(cell, []), plain.records.get(cell, []))
    if before:
        check = _check(claim, before, after, run.alpha, "negative", f"accuracy on {CELL_LABELS[cell]}",
                       f"{plain.name} - base")
    else:
        check = _not_shown(claim, "no sample judged in both the base and this run yet")
    out.append(ClaimResult("task-alone-overfits-ood-text", [plain.name], check))
    for r in hybrid:
        if r is plain or r.ratio == 0.0:
            continue
        mix = f"r={r.ratio:g}, by {r.spec.get('mix_by', 'sample')}"
        claim = f"Hybrid data ({mix}) recovers {CELL_LABELS[cell]} against the task alone ({plain.name})"
        before, after = paired_flags(plain.records.get(cell, []), r.records.get(cell, []))
        check = (_check(claim, before, after, run.alpha, "positive", f"accuracy on {CELL_LABELS[cell]}",
                        f"{r.name} - {plain.name}", rose=f"{{n}} answers right only with {r.name}",
                        fell=f"{{n}} right only with {plain.name}") if before else
                 _not_shown(claim, "the two runs share no judged sample on this cell yet"))
        out.append(ClaimResult("hybrid-recovers-ood-text", [r.name, plain.name], check,
                               _per_cell_details(run.base, r.records, [cell], run.alpha, "accuracy from the base")))
        claim = (f"With hybrid data ({mix}) the target gain stays: target accuracy within {run.margin:g} of the task "
                 f"alone ({plain.name})")
        before, after = paired_flags(plain.records.get(TARGET_CELL, []), r.records.get(TARGET_CELL, []))
        check = (_check(claim, before, after, run.alpha, "not_worse", f"accuracy on {CELL_LABELS[TARGET_CELL]}",
                        f"{r.name} - {plain.name}", margin=run.margin, rose=f"{{n}} answers right only with {r.name}",
                        fell=f"{{n}} right only with {plain.name}") if before else
                 _not_shown(claim, "the two runs share no judged target sample yet"))
        out.append(ClaimResult("hybrid-keeps-target-gain", [r.name, plain.name], check,
                               _per_cell_details(run.base, r.records, [TARGET_CELL], run.alpha, "gain from the base")))
    return out
