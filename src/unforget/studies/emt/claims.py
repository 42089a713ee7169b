"""EMT's findings (arXiv 2309.10313) checked on a run's own samples, each with paired exact McNemar tests:

1. early fine-tuning helps the other datasets (epoch 1 beats the base model);
2. longer fine-tuning degrades them (the last epoch is worse than the best);
3. the answers drift to the fine-tuning set's labels (the label-leak rate rises);
4. fine-tuning the projector alone retains more than LoRA: every arm whose method trains only the projector against
   every arm of the same seed whose method trains low-rank adapters (what each method does is the registered
   method's own knowledge: ``FinetuneMethod.projector_only``, ``FinetuneMethod.low_rank``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

from ...reports.document import name_the_changes
from ...stats import ClaimCheck, PairedTest, check_claim, mcnemar_exact
from .records import Arm, ByDataset, EmtRun, judged, paired_flags, pooled

ClaimId = Literal["early-fine-tuning-helps", "long-fine-tuning-degrades", "fine-tuning-labels-leak",
                  "projector-retains-more"]


@dataclass
class EmtClaim:
    """One claim checked for one arm (``arm``: its folder; two folders joined by ``~`` for the comparison of
    arms); ``details``: the per-dataset sentences behind the verdict; ``compared``: the epochs compared (None when
    the claim could not be tested at all)."""

    id: ClaimId
    arm: str
    check: ClaimCheck
    details: list[str] = field(default_factory=list)
    compared: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "arm": self.arm, **self.check.to_dict(), "details": list(self.details)}
        if self.compared is not None:
            out["compared"] = list(self.compared)
        return out


def check_claims(run: EmtRun) -> list[EmtClaim]:
    out: list[EmtClaim] = []
    for arm in run.arms:
        out.append(_claim_early_helps(run, arm))
        out.append(_claim_long_degrades(run, arm))
        out.append(_claim_labels_leak(run, arm))
    projector = [a for a in run.arms if a.finetune_method is not None and a.finetune_method.projector_only]
    lora = [a for a in run.arms if a.finetune_method is not None and a.finetune_method.low_rank]
    for p in projector:
        for q in lora:
            if p.seed == q.seed:
                out.append(_claim_projector_retains(run, p, q))
    return out


def _not_shown(claim: str, why: str) -> ClaimCheck:
    return ClaimCheck(claim=claim, held=None, verdict="not shown", evidence=why)


def _per_dataset_details(run: EmtRun, before: ByDataset, after: ByDataset, datasets: Sequence[str],
                         key: str = "correct", what: str = "accuracy") -> list[str]:
    lines = []
    for d in datasets:
        a, b = paired_flags(before.get(d, []), after.get(d, []), key, run.fine_tuning_set)
        if not a:
            continue
        t = mcnemar_exact(a, b, alpha=run.alpha)
        lines.append(f"{run.names[d]}: {what} {t.before} -> {t.after}, change {t.delta.format(3)}, "
                     f"exact McNemar p={t.p_value:.2g} (n={len(a)})")
    return lines


def _check(claim: str, before: list[bool], after: list[bool], alpha: float, expect: str, subject: str,
           delta_of: str, rose: str = "{n} answers turned right", fell: str = "{n} turned wrong") -> ClaimCheck:
    """``rose`` / ``fell``: what the samples that changed did, in words (flag no -> yes, yes -> no)."""
    test: PairedTest = replace(mcnemar_exact(before, after, alpha=alpha), delta_of=delta_of)
    return name_the_changes(check_claim(claim, test, expect, subject=subject),  # type: ignore[arg-type]
                            rose, fell)


def _claim_early_helps(run: EmtRun, arm: Arm) -> EmtClaim:
    claim = f"Early fine-tuning ({run.who(arm)}) helps the other datasets: epoch 1 beats the base model"
    others = run.other_datasets
    if not others:
        return EmtClaim("early-fine-tuning-helps", arm.label,
                        _not_shown(claim, "only the fine-tuning set was evaluated"))
    if 1 not in arm.epochs:
        return EmtClaim("early-fine-tuning-helps", arm.label, _not_shown(claim, "epoch 1 has not been evaluated yet"))
    before, after = paired_flags(pooled(run.base, others), pooled(arm.epochs[1], others))
    if not before:
        return EmtClaim("early-fine-tuning-helps", arm.label,
                        _not_shown(claim, "no sample was judged in both evaluations"))
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on the other datasets ({run.listed(others)})", "epoch 1 - base")
    return EmtClaim("early-fine-tuning-helps", arm.label, check,
                    _per_dataset_details(run, run.base, arm.epochs[1], others), compared=[0, 1])


def _claim_long_degrades(run: EmtRun, arm: Arm) -> EmtClaim:
    claim = (f"Longer fine-tuning ({run.who(arm)}) degrades the other datasets: the last epoch is worse than "
             "the best epoch")
    others = run.other_datasets
    tuned = arm.tuned_epochs()
    if not others:
        return EmtClaim("long-fine-tuning-degrades", arm.label,
                        _not_shown(claim, "only the fine-tuning set was evaluated"))
    if len(tuned) < 2:
        return EmtClaim("long-fine-tuning-degrades", arm.label,
                        _not_shown(claim, f"needs at least 2 evaluated epochs; this arm has {len(tuned)}"))
    by_epoch = {e: judged(pooled(arm.epochs[e], others)) for e in tuned}
    accuracy = {e: (sum(bool(r["correct"]) for r in rs) / len(rs) if rs else -1.0) for e, rs in by_epoch.items()}
    best = max(tuned, key=lambda e: (accuracy[e], -e))
    last = tuned[-1]
    if best == last:
        why = (f"the best epoch on the other datasets is the last one (epoch {last}, accuracy "
               f"{accuracy[last]:.3f}): no decline after the peak to test")
        return EmtClaim("long-fine-tuning-degrades", arm.label, _not_shown(claim, why), compared=[best, last])
    before, after = paired_flags(by_epoch[best], by_epoch[last])
    check = _check(claim, before, after, run.alpha, "negative",
                   f"accuracy on the other datasets ({run.listed(others)})",
                   f"last (epoch {last}) - best (epoch {best})")
    note = (f"The best epoch ({best}) was picked on these same samples, which favours finding a decline; "
            "read a borderline p with that in mind.")
    details = [note, *_per_dataset_details(run, arm.epochs[best], arm.epochs[last], others)]
    return EmtClaim("long-fine-tuning-degrades", arm.label, check, details, compared=[best, last])


def leak_datasets(run: EmtRun) -> tuple[list[str], list[str]]:
    """(datasets whose answers can leak the fine-tuning labels, datasets left out because they share labels with
    the fine-tuning set). Sharing shows in the records: a correct answer there already names a fine-tuning label."""
    usable, shared = [], []
    for d in run.other_datasets:
        records = [r for per in [run.base, *(a.epochs[e] for a in run.arms for e in a.tuned_epochs())]
                   for r in judged(per.get(d, []))]
        if any(r["correct"] and (r.get("leaks") or {}).get(run.fine_tuning_set) for r in records):
            shared.append(d)
        else:
            usable.append(d)
    return usable, shared


def _claim_labels_leak(run: EmtRun, arm: Arm) -> EmtClaim:
    claim = (f"Fine-tuning ({run.who(arm)}) makes the model answer other datasets' questions with "
             f"{run.names[run.fine_tuning_set]} labels: the label-leak rate rises from the base model to the last "
             "epoch")
    usable, shared = leak_datasets(run)
    extra = ([f"left out (shares labels with {run.names[run.fine_tuning_set]}): {run.listed(shared)}"]
             if shared else [])
    if not usable:
        why = "no other dataset whose answers can be told apart from fine-tuning labels was evaluated"
        return EmtClaim("fine-tuning-labels-leak", arm.label, _not_shown(claim, why), extra)
    if arm.last_epoch == 0:
        return EmtClaim("fine-tuning-labels-leak", arm.label,
                        _not_shown(claim, "no fine-tuned epoch has been evaluated"), extra)
    last = arm.last_epoch
    before, after = paired_flags(pooled(run.base, usable), pooled(arm.epochs[last], usable), "leak",
                                 run.fine_tuning_set)
    if not before:
        return EmtClaim("fine-tuning-labels-leak", arm.label,
                        _not_shown(claim, "no sample was judged in both evaluations"), extra)
    check = _check(claim, before, after, run.alpha, "positive",
                   f"share of answers naming {run.names[run.fine_tuning_set]} labels on {run.listed(usable)}",
                   f"last (epoch {last}) - base",
                   rose=f"{{n}} answers started naming a {run.names[run.fine_tuning_set]} label",
                   fell="{n} stopped")
    details = extra + _per_dataset_details(run, run.base, arm.epochs[last], usable, "leak", "label-leak rate")
    return EmtClaim("fine-tuning-labels-leak", arm.label, check, details, compared=[0, last])


def _claim_projector_retains(run: EmtRun, projector: Arm, lora: Arm) -> EmtClaim:
    seed = "" if len(run.seeds) == 1 else f", seed {projector.seed}"
    claim = (f"Projector-only fine-tuning ({projector.name}) retains more than LoRA ({lora.name}{seed}) on the other "
             "datasets at the last epoch")
    others = run.other_datasets
    arms = f"{projector.label}~{lora.label}"
    if not others:
        return EmtClaim("projector-retains-more", arms, _not_shown(claim, "only the fine-tuning set was evaluated"))
    if projector.last_epoch == 0 or lora.last_epoch == 0:
        return EmtClaim("projector-retains-more", arms, _not_shown(claim, "an arm has no evaluated epoch yet"))
    lo, pr = lora.epochs[lora.last_epoch], projector.epochs[projector.last_epoch]
    before, after = paired_flags(pooled(lo, others), pooled(pr, others))
    if not before:
        return EmtClaim("projector-retains-more", arms, _not_shown(claim, "the two arms share no judged sample"))
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on the other datasets ({run.listed(others)}), {lora.name} (epoch {lora.last_epoch}) "
                   f"vs {projector.name} (epoch {projector.last_epoch})", f"{projector.name} - {lora.name}",
                   rose=f"{{n}} answers right only with {projector.name}", fell=f"{{n}} right only with {lora.name}")
    return EmtClaim("projector-retains-more", arms, check, _per_dataset_details(run, lo, pr, others),
                    compared=[lora.last_epoch, projector.last_epoch])
