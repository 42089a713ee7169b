"""The EMT study's summary (metrics.json), computed from its run folder only, as typed dataclasses.

Inputs (layout in :mod:`unforget.studies.emt.run`, read by :mod:`.records`): ``config.yaml``; ``base/samples.jsonl``
(epoch 0) and ``base/metrics.json`` (vision-encoder baselines); per arm ``samples.jsonl`` (tagged with epoch and
seed), ``alignment.jsonl``, ``probe.jsonl``, ``language.jsonl`` (judge-free language scores, with their per-item
values), ``metrics.json`` (which epochs finished), ``train_result.json`` and ``train/train_log.jsonl``.

Every accuracy and rate is recomputed from the judged records, so that comparisons can pair the same sample ids:

- accuracies and rates carry Wilson intervals at ``1 - alpha``;
- forgetting (base - last) and every claim (:mod:`.claims`) use exact McNemar tests on the samples judged in both
  evaluations (`stats.forgetting_delta`, `stats.mcnemar_exact`, `stats.check_claim`);
- with several seeds, the spread over seeds (`stats.seed_summary`) is reported apart from sample intervals;
- answer log-likelihood and held-out perplexity carry percentile bootstrap intervals over items, and their change
  from the base model is paired on the same items (:func:`unforget.studies.language_scores.language_point`).

``summarise_emt(run_dir)`` returns the :class:`EmtSummary`; its ``to_dict()`` is what metrics.json holds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ... import __version__
from ...evaluation.metrics import FormatKnowledgeSplit, split_records
from ...reports.language import change_sentence, change_verdicts
from ...reports.names import display_names
from ..probing import probe_mean, rank_correlation
from ...stats import (
    Estimate,
    PairedTest,
    SeedSummary,
    bootstrap_interval,
    forgetting_delta,
    json_float,
    seed_summary,
    wilson_interval,
)
from ..language_scores import language_point
from .claims import EmtClaim, check_claims
from .records import Arm, EmtRun, EvalFacts, Record, is_text_set, judged, paired_flags, pooled, read_emt_run

NO_CLASS = "<none>"
ENTROPY_RESAMPLES = 1000
LOSS_POINTS = 2000  # the loss curve kept in metrics.json is thinned to at most this many steps

ProbeDocument = dict[str, Any]  # a part of a probe.jsonl row as the probe wrote it (`evaluation.probe`), carried as is
LanguageDocument = dict[str, Any]  # a `language_point` (the judge-free language scores of one evaluation point)


def _est(e: Estimate | None) -> dict[str, Any] | None:
    return e.to_dict() if e is not None else None


# ------------------------------------------------------------------------------------------------ the summary


@dataclass
class EpochFigures:
    """Accuracy, label-leak, no-class and concentration figures of one dataset at one epoch (``epoch`` None: the
    base model's figures, which metrics.json keeps without an epoch)."""

    n: int
    accuracy: Estimate | None
    leak_rate: Estimate | None
    no_class_rate: Estimate | None
    top1_share: Estimate | None
    top1_class: str | None
    normalised_entropy: Estimate | None
    unjudged: int
    skipped: int
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.epoch is None else {"epoch": self.epoch}
        out.update({"n": self.n, "accuracy": _est(self.accuracy), "leak_rate": _est(self.leak_rate),
                    "no_class_rate": _est(self.no_class_rate), "top1_share": _est(self.top1_share),
                    "top1_class": self.top1_class, "normalised_entropy": _est(self.normalised_entropy),
                    "unjudged": self.unjudged, "skipped": self.skipped})
        return out


@dataclass
class Baseline:
    """The model's own vision encoder as a classifier on the base evaluation's samples (from base/metrics.json)."""

    value: float | None
    low: float | None
    high: float | None
    n: int | None
    n_train: int | None
    encoder: str | None
    method: str = "wilson"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "n_train": self.n_train,
                "encoder": self.encoder, "method": self.method}


@dataclass
class AlignmentPoint:
    """Visual-text alignment at one epoch: mean cosine of the images with their true class name (stored without
    per-image values, so no interval), and the share of images whose best-aligned name is the true one."""

    epoch: int
    n: int
    cosine_true: float | None
    cosine_margin: float | None
    mean_rank: float | None
    top1: Estimate | None

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "n": self.n, "cosine_true": self.cosine_true,
                "cosine_margin": self.cosine_margin, "mean_rank": self.mean_rank, "top1": _est(self.top1)}


@dataclass
class TableRow:
    """Base / best fine-tuned epoch / last epoch / forgetting (base - last, paired) of one dataset for one arm."""

    base: Estimate | None
    best_epoch: int | None
    best: Estimate | None
    last_epoch: int | None
    last: Estimate | None
    forgetting: PairedTest | None

    def to_dict(self) -> dict[str, Any]:
        return {"base": _est(self.base), "best_epoch": self.best_epoch, "best": _est(self.best),
                "last_epoch": self.last_epoch, "last": _est(self.last),
                "forgetting": self.forgetting.to_dict() if self.forgetting is not None else None}


@dataclass
class Confusion:
    """Before/after confusion counts of one dataset: true class -> named class (``<none>``: no class) -> count."""

    dataset: str
    role: str
    before_epoch: int
    after_epoch: int
    classes: list[str]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "role": self.role, "before_epoch": self.before_epoch,
                "after_epoch": self.after_epoch, "classes": list(self.classes), "before": self.before,
                "after": self.after}


@dataclass
class LossCurve:
    """The training loss per optimizer step, thinned to at most ``LOSS_POINTS`` (every ``stride``-th of ``steps``)."""

    step: list[int]
    epoch: list[float]
    loss: list[float | None]
    steps: int
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return {"step": list(self.step), "epoch": list(self.epoch), "loss": list(self.loss), "steps": self.steps,
                "stride": self.stride}


@dataclass
class TrainFacts:
    """What the arm's fine-tuning run recorded (train_result.json: `training.trainer.FinetuneResult`), less its
    per-step losses."""

    out: str | None = None
    method: str | None = None
    global_step: int | None = None
    epochs_done: int | None = None
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    checkpoints: list[str] | None = None
    final_checkpoint: str | None = None
    resumed_from: str | None = None
    seconds: float | None = None
    final_loss: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainFacts:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "method": self.method, "global_step": self.global_step,
                "epochs_done": self.epochs_done, "trainable_parameters": self.trainable_parameters,
                "total_parameters": self.total_parameters, "checkpoints": self.checkpoints,
                "final_checkpoint": self.final_checkpoint, "resumed_from": self.resumed_from,
                "seconds": self.seconds, "final_loss": self.final_loss}


@dataclass
class ClassSubsetPoint:
    epoch: int
    held_in_accuracy: Estimate | None
    held_out_accuracy: Estimate | None
    held_out_top1_share: Estimate | None  # share of ALL held-out samples answered with the most common class
    held_out_top1_class: str | None
    held_out_as_held_in: Estimate | None

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "held_in_accuracy": _est(self.held_in_accuracy),
                "held_out_accuracy": _est(self.held_out_accuracy),
                "held_out_top1_share": _est(self.held_out_top1_share), "held_out_top1_class": self.held_out_top1_class,
                "held_out_as_held_in": _est(self.held_out_as_held_in)}


@dataclass
class ClassSubset:
    """Class-subset fine-tuning: held-in vs held-out class accuracy on the fine-tuning set, and whether the held-out
    classes collapse onto one predicted class (EMT's minority collapse)."""

    held_in_classes: list[int]
    points: list[ClassSubsetPoint]
    collapsed: bool
    collapse_rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"held_in_classes": list(self.held_in_classes), "points": [p.to_dict() for p in self.points],
                "collapsed": self.collapsed, "collapse_rule": self.collapse_rule}


@dataclass
class FormatKnowledgePoint:
    """Wrong answers at one epoch split into "format broke" and "knowledge lost"."""

    epoch: int
    split: FormatKnowledgeSplit

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.split.to_dict()}


@dataclass
class ArmSummary:
    """One arm: per dataset its curve over epochs (epoch 0: the base model) and its table row, and what else the
    folder holds (confusion matrices, alignment, loss, class subset, format vs knowledge)."""

    name: str
    method: str
    seed: int
    folder: str
    done: bool
    epochs: list[int]
    partial_epochs: list[int]
    last_epoch: int
    curves: dict[str, list[EpochFigures]]
    table: dict[str, TableRow]
    confusion: list[Confusion]
    alignment: dict[str, list[AlignmentPoint]]
    loss: LossCurve | None
    train: TrainFacts | None
    class_subset: ClassSubset | None
    format_knowledge: dict[str, list[FormatKnowledgePoint]] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "method": self.method, "seed": self.seed, "folder": self.folder, "done": self.done,
            "epochs": list(self.epochs), "partial_epochs": list(self.partial_epochs), "last_epoch": self.last_epoch,
            "curves": {d: [p.to_dict() for p in c] for d, c in self.curves.items()},
            "table": {d: t.to_dict() for d, t in self.table.items()},
            "confusion": [c.to_dict() for c in self.confusion],
            "alignment": {d: [p.to_dict() for p in ps] for d, ps in self.alignment.items()},
            "loss": self.loss.to_dict() if self.loss is not None else None,
            "train": self.train.to_dict() if self.train is not None else None,
            "class_subset": self.class_subset.to_dict() if self.class_subset is not None else None,
            "format_knowledge": ({d: [p.to_dict() for p in ps] for d, ps in self.format_knowledge.items()}
                                 if self.format_knowledge is not None else None),
        }


@dataclass
class SeedCurvePoint:
    epoch: int
    accuracy: SeedSummary

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.accuracy.to_dict()}


@dataclass
class SeedFigures:
    """Mean and spread over seeds of one method's last and best accuracy and forgetting on one dataset, and its
    mean curve: seed spreads, not sample intervals."""

    last: SeedSummary | None
    best: SeedSummary | None
    forgetting: SeedSummary | None
    curve: list[SeedCurvePoint]

    def to_dict(self) -> dict[str, Any]:
        def one(s: SeedSummary | None) -> dict[str, Any] | None:
            return s.to_dict() if s is not None else None

        return {"last": one(self.last), "best": one(self.best), "forgetting": one(self.forgetting),
                "curve": [p.to_dict() for p in self.curve]}


@dataclass
class SeedGroup:
    seeds: list[int]
    datasets: dict[str, SeedFigures]

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "datasets": {d: f.to_dict() for d, f in self.datasets.items()}}


@dataclass
class ProbeCurvePoint:
    """The probe at one epoch of an arm: its KL and label mass as probe.jsonl holds them, and the KL on the other
    datasets (``kl_others``: the mean over their probe samples)."""

    epoch: int
    kl: ProbeDocument | None
    kl_others: float | None
    label_mass: ProbeDocument | None
    base_label_mass: float | None
    by_dataset: ProbeDocument

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "kl": self.kl, "kl_others": self.kl_others, "label_mass": self.label_mass,
                "base_label_mass": self.base_label_mass, "by_dataset": self.by_dataset}


@dataclass
class ProbePoint:
    """One fine-tuned epoch of an arm: the probe's KL on the other datasets beside the forgetting measured there
    (base accuracy - epoch accuracy, paired on the ``n`` samples judged in both)."""

    arm: str
    name: str
    epoch: int
    kl: float
    forgetting: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "name": self.name, "epoch": self.epoch, "kl": self.kl,
                "forgetting": self.forgetting, "n": self.n}


@dataclass
class ProbeSummary:
    """The judge-free probe per arm and epoch, and Spearman's rank correlation of its KL with measured forgetting
    over all points (`studies.probing.rank_correlation`'s result)."""

    datasets: list[str]
    label_set: str | None
    curves: dict[str, list[ProbeCurvePoint]]  # arm folder -> its curve
    points: list[ProbePoint]
    correlation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"datasets": list(self.datasets), "label_set": self.label_set,
                "curves": {a: [p.to_dict() for p in c] for a, c in self.curves.items()},
                "points": [p.to_dict() for p in self.points], "correlation": self.correlation}


@dataclass
class LanguageVerdict:
    """An arm's last epoch against the base model on the language scores: per score whether it got worse, better or
    no change was shown, and the sentence with the numbers."""

    arm: str
    epoch: int
    heldout_perplexity: str
    answer_logprob: str
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "epoch": self.epoch, "heldout_perplexity": self.heldout_perplexity,
                "answer_logprob": self.answer_logprob, "sentence": self.sentence}


@dataclass
class LanguageSummary:
    """The judge-free language scores per arm and epoch (epoch 0: the base model), with the judged accuracy on the
    text set beside them."""

    dataset: str | None
    confidence: float
    base: LanguageDocument | None
    curves: dict[str, list[LanguageDocument]]  # arm folder -> its points
    verdicts: list[LanguageVerdict]
    missing_base: bool

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "confidence": self.confidence, "base": self.base, "curves": self.curves,
                "verdicts": [v.to_dict() for v in self.verdicts], "missing_base": self.missing_base}


@dataclass
class EmtSummary:
    """The study's numbers (metrics.json): ``to_dict()`` writes them in this order."""

    run_dir: str
    name: str
    model: str | None
    fine_tuning_set: str
    classes: list[int] | None
    datasets: list[str]
    other_datasets: list[str]
    class_counts: dict[str, int]
    # sets of plain-text answers (the "text" set): no classes, so no concentration or confusion matrix
    text_datasets: list[str]
    alpha: float
    seeds: list[int]
    eval: EvalFacts
    base_done: bool
    baselines: dict[str, dict[str, Baseline]]  # dataset -> baseline kind (linear-probe, zero-shot) -> figures
    base: dict[str, EpochFigures]
    base_alignment: dict[str, AlignmentPoint]
    arms: list[ArmSummary]
    seed_summaries: dict[str, SeedGroup]  # arm name -> its spread over seeds (empty with one seed)
    claims: list[EmtClaim]
    probe: ProbeSummary | None
    language: LanguageSummary | None
    notes: list[str]
    missing_arms: list[str]
    unforget: str = __version__

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label on the page (:func:`unforget.reports.names.display_names`)."""
        return display_names([*self.datasets, self.fine_tuning_set])

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": "emt", "unforget": self.unforget, "run_dir": self.run_dir, "name": self.name,
            "model": self.model, "fine_tuning_set": self.fine_tuning_set, "classes": self.classes,
            "datasets": list(self.datasets), "other_datasets": list(self.other_datasets),
            "class_counts": dict(self.class_counts), "text_datasets": list(self.text_datasets),
            "alpha": self.alpha, "confidence": self.confidence, "seeds": list(self.seeds),
            "eval": self.eval.to_dict(), "base_done": self.base_done,
            "baselines": {d: {k: b.to_dict() for k, b in kinds.items()} for d, kinds in self.baselines.items()},
            "base": {d: f.to_dict() for d, f in self.base.items()},
            "base_alignment": {d: p.to_dict() for d, p in self.base_alignment.items()},
            "arms": [a.to_dict() for a in self.arms],
            "seed_summaries": {m: g.to_dict() for m, g in self.seed_summaries.items()},
            "claims": [c.to_dict() for c in self.claims],
            "probe": self.probe.to_dict() if self.probe is not None else None,
            "language": self.language.to_dict() if self.language is not None else None,
            "notes": list(self.notes), "missing_arms": list(self.missing_arms),
        }


# --------------------------------------------------------------------------------------------- per-epoch figures


def _wilson(k: int, n: int, alpha: float) -> Estimate | None:
    return wilson_interval(k, n, 1.0 - alpha) if n else None


def normalised_entropy_estimate(predictions: Sequence[str], num_classes: int, alpha: float,
                                n_resamples: int = ENTROPY_RESAMPLES) -> Estimate | None:
    """Entropy of the predicted-class histogram / log2(num_classes), with a bootstrap interval over samples.
    ``predictions`` are the answers that named a class (as in `evaluation.metrics.prediction_concentration`)."""
    if not predictions:
        return None
    if num_classes <= 1:
        return Estimate(0.0, 0.0, 0.0, len(predictions), "bootstrap_percentile", 1.0 - alpha)
    codes_of: dict[str, int] = {}
    codes = np.array([codes_of.setdefault(p, len(codes_of)) for p in predictions], dtype=np.int64)
    distinct = len(codes_of)
    log_k = math.log2(num_classes)

    def statistic(c: np.ndarray) -> np.ndarray:
        k, n = c.shape
        counts = np.bincount((c + np.arange(k)[:, None] * distinct).ravel(), minlength=k * distinct)
        p = counts.reshape(k, distinct) / n
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
        return -terms.sum(-1) / log_k

    return bootstrap_interval(statistic, codes, n_resamples=n_resamples, confidence=1.0 - alpha, seed=0)


def epoch_figures(records: Sequence[Record], fine_tuning_set: str, num_classes: int, alpha: float,
                  epoch: int | None = None) -> EpochFigures:
    """Accuracy, label-leak, no-class and concentration figures of one dataset at one epoch."""
    kept = judged(records)
    n = len(kept)
    named = [r["prediction"] for r in kept if r.get("prediction") is not None]
    top_class, top_count = Counter(named).most_common(1)[0] if named else (None, 0)
    return EpochFigures(
        n=n,
        accuracy=_wilson(sum(bool(r["correct"]) for r in kept), n, alpha),
        leak_rate=_wilson(sum(bool((r.get("leaks") or {}).get(fine_tuning_set)) for r in kept), n, alpha),
        no_class_rate=_wilson(n - len(named), n, alpha),
        top1_share=_wilson(top_count, len(named), alpha),
        top1_class=top_class,
        normalised_entropy=normalised_entropy_estimate(named, num_classes, alpha),
        unjudged=sum(1 for r in records if not r.get("skipped") and r.get("correct") is None),
        skipped=sum(1 for r in records if r.get("skipped")),
        epoch=epoch,
    )


def class_count(dataset: str, run: EmtRun) -> int:
    """Number of classes of ``dataset``, for normalising the entropy.

    The run folder has no class list, so: the classes seen in any record (references and predictions), or more when
    an evaluator's metrics.json lets the count be recovered (entropy / normalised entropy = log2 of the count).
    """
    seen: set[str] = set()
    for arm_epochs in [{0: run.base}, *(a.epochs for a in run.arms)]:
        for per_dataset in arm_epochs.values():
            for r in per_dataset.get(dataset, []):
                if r.get("reference") is not None:
                    seen.add(str(r["reference"]))
                if r.get("prediction") is not None:
                    seen.add(str(r["prediction"]))
    count = len(seen)
    docs = [(run.base_metrics.get("datasets") or {}).get(dataset)]
    for arm in run.arms:
        for epoch_doc in ((arm.metrics or {}).get("epochs") or {}).values():
            docs.append((epoch_doc.get("datasets") or {}).get(dataset))
    for doc in docs:
        if doc and (doc.get("prediction_entropy") or 0) > 0 and (doc.get("normalised_entropy") or 0) > 0:
            count = max(count, round(2 ** (doc["prediction_entropy"] / doc["normalised_entropy"])))
    return count


# ------------------------------------------------------------------------------------------------- summary


def summarise_emt(run_dir: str | Path) -> EmtSummary:
    """The study's numbers and claims, computed from the run folder only (written as metrics.json)."""
    run = read_emt_run(run_dir)
    counts = {d: class_count(d, run) for d in run.datasets}
    text_sets = [d for d in run.datasets if is_text_set(run, d)]
    arms = [_summarise_arm(run, arm, counts) for arm in run.arms]
    return EmtSummary(
        run_dir=str(run.path),
        name=run.name,
        model=run.model,
        fine_tuning_set=run.fine_tuning_set,
        classes=run.classes,
        datasets=run.datasets,
        other_datasets=run.other_datasets,
        class_counts=counts,
        text_datasets=text_sets,
        alpha=run.alpha,
        seeds=run.seeds,
        eval=run.eval,
        base_done=run.base_done,
        baselines=_baselines(run),
        base={d: epoch_figures(run.base.get(d, []), run.fine_tuning_set, counts[d], run.alpha) for d in run.datasets},
        base_alignment={row["dataset"]: _alignment_point(row, run.alpha) for row in run.base_alignment
                        if row.get("epoch", 0) == 0},
        arms=arms,
        seed_summaries=_seed_summaries(run, arms) if len(run.seeds) > 1 else {},
        claims=check_claims(run),
        probe=probe_summary(run),
        language=language_summary(run, arms),
        notes=_notes(run),
        missing_arms=[name for name in run.configured_arms if not any(a.name == name for a in run.arms)],
    )


def _summarise_arm(run: EmtRun, arm: Arm, counts: dict[str, int]) -> ArmSummary:
    curves = {d: [epoch_figures(arm.epochs[e].get(d, []), run.fine_tuning_set, counts[d], run.alpha, epoch=e)
                  for e in sorted(arm.epochs)] for d in run.datasets}
    table = {d: _table_row(run, arm, d, curves[d]) for d in run.datasets}
    train = {k: v for k, v in (arm.train_result or {}).items() if k != "losses"}
    return ArmSummary(
        name=arm.name, method=arm.method, seed=arm.seed, folder=arm.label, done=arm.done,
        epochs=sorted(arm.epochs), partial_epochs=arm.partial_epochs, last_epoch=arm.last_epoch,
        curves=curves,
        table=table,
        confusion=_confusions(run, arm, table),
        alignment=_alignment(run, arm),
        loss=_loss_curve(arm.train_log),
        train=TrainFacts.from_dict(train) if train else None,
        class_subset=_class_subset(run, arm) if run.classes else None,
        format_knowledge=format_knowledge_curves(run, arm),
    )


def format_knowledge_curves(run: EmtRun, arm: Arm) -> dict[str, list[FormatKnowledgePoint]] | None:
    """Per dataset and epoch: wrong answers split into "format broke" (the exact judge rejects the answer, the
    likelihood ranking still puts the true class first) and "knowledge lost" (both wrong). Only runs evaluated in
    generate mode with ``eval.also_rank: true`` have both verdicts; None otherwise."""
    out: dict[str, list[FormatKnowledgePoint]] = {}
    for d in run.datasets:
        for epoch in sorted(arm.epochs):
            split = split_records(arm.epochs[epoch].get(d, []), confidence=1.0 - run.alpha)
            if split is not None:
                out.setdefault(d, []).append(FormatKnowledgePoint(epoch, split))
    return out or None


def probe_summary(run: EmtRun) -> ProbeSummary | None:
    """The judge-free probe per arm and epoch, and how well its KL tracks measured forgetting.

    Per point (arm, fine-tuned epoch): the probe's KL on the other datasets (mean over their probe samples) and the
    measured forgetting there (base accuracy - epoch accuracy, paired on the samples judged in both). Spearman's rank
    correlation over all points of all arms says whether the cheap probe orders runs as the judged evaluation does.
    """
    if not run.base_probe and not any(a.probe for a in run.arms):
        return None
    others = run.other_datasets or run.datasets
    base_rows = [{**r, "epoch": 0} for r in run.base_probe[-1:]]
    curves: dict[str, list[ProbeCurvePoint]] = {}
    points: list[ProbePoint] = []
    for arm in run.arms:
        rows = {int(r["epoch"]): r for r in [*base_rows, *arm.probe]}
        curve = []
        for epoch in sorted(rows):
            r = rows[epoch]
            kl_others = probe_mean(r, others, "kl")
            curve.append(ProbeCurvePoint(epoch=epoch, kl=r.get("kl"), kl_others=kl_others,
                                         label_mass=r.get("label_mass"), base_label_mass=r.get("base_label_mass"),
                                         by_dataset=r.get("by_dataset") or {}))
            if epoch > 0 and epoch in arm.epochs and kl_others is not None:
                before, after = paired_flags(pooled(run.base, others), pooled(arm.epochs[epoch], others))
                if before:
                    points.append(ProbePoint(arm=arm.label, name=arm.name, epoch=epoch, kl=kl_others,
                                             forgetting=(sum(before) - sum(after)) / len(before), n=len(before)))
        curves[arm.label] = curve
    label_set = next((r.get("label_set") for r in [*run.base_probe, *(p for a in run.arms for p in a.probe)]
                      if r.get("label_set")), None)
    return ProbeSummary(datasets=others, label_set=label_set, curves=curves, points=points,
                        correlation=kl_forgetting_correlation([p.to_dict() for p in points]))


def language_summary(run: EmtRun, arms: Sequence[ArmSummary]) -> LanguageSummary | None:
    """The judge-free language scores per arm and epoch (epoch 0: the base model), with the judged accuracy on the
    text set beside them, and per arm a sentence on its last epoch against the base model. None when no
    language.jsonl row was written (no "text" set evaluated, or language.enabled false)."""
    if not run.base_language and not any(a.language for a in run.arms):
        return None
    confidence = 1.0 - run.alpha
    base_row = run.base_language[-1] if run.base_language else None
    dataset = next(r.get("dataset") for r in [*run.base_language, *(x for a in run.arms for x in a.language)])
    curves: dict[str, list[LanguageDocument]] = {}
    verdicts = []
    base_point = language_point(base_row, None, confidence) if base_row else None
    for arm, summary in zip(run.arms, arms):
        accuracy = {p.epoch: _est(p.accuracy) for p in (summary.curves.get(dataset) or [])}
        rows = {int(r["epoch"]): r for r in ([base_row] if base_row else []) + arm.language}
        curve = [language_point(rows[e], base_row, confidence, accuracy.get(e)) for e in sorted(rows)]
        curves[arm.label] = curve
        tuned = [p for p in curve if p["epoch"] > 0]
        if base_point is not None and tuned:
            last = tuned[-1]
            verdict = change_verdicts(last)
            verdicts.append(LanguageVerdict(arm=arm.label, epoch=last["epoch"],
                                            heldout_perplexity=verdict["heldout_perplexity"],
                                            answer_logprob=verdict["answer_logprob"],
                                            sentence=change_sentence(run.who(arm), last, base_point, confidence)))
    return LanguageSummary(dataset=dataset, confidence=confidence, base=base_point, curves=curves, verdicts=verdicts,
                           missing_base=base_row is None)


def kl_forgetting_correlation(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Spearman's rho (scipy.stats.spearmanr) between probe KL and measured forgetting over (arm, epoch) points."""
    return rank_correlation(points, "kl", "forgetting", "(method, epoch)")


def _table_row(run: EmtRun, arm: Arm, dataset: str, curve: list[EpochFigures]) -> TableRow:
    """Base / best fine-tuned epoch / last epoch / forgetting (base - last, paired) of one dataset."""
    by_epoch = {p.epoch: p for p in curve}
    tuned = [p for p in curve if p.epoch is not None and p.epoch > 0 and p.accuracy is not None]
    best = max(tuned, key=lambda p: (json_float(p.accuracy.value), -p.epoch)) if tuned else None  # type: ignore
    last = by_epoch.get(arm.last_epoch) if arm.last_epoch > 0 else None
    forgetting = None
    if last is not None:
        before, after = paired_flags(run.base.get(dataset, []), arm.epochs[arm.last_epoch].get(dataset, []))
        if before:
            forgetting = forgetting_delta(before, after, alpha=run.alpha)
    return TableRow(
        base=by_epoch[0].accuracy,
        best_epoch=best.epoch if best else None,
        best=best.accuracy if best else None,
        last_epoch=arm.last_epoch if last else None,
        last=last.accuracy if last else None,
        forgetting=forgetting,
    )


def _baselines(run: EmtRun) -> dict[str, dict[str, Baseline]]:
    out: dict[str, dict[str, Baseline]] = {}
    for dataset, doc in (run.base_metrics.get("datasets") or {}).items():
        for kind, b in (doc.get("baselines") or {}).items():
            out.setdefault(dataset, {})[kind] = Baseline(
                value=json_float(b.get("accuracy")), low=json_float(b.get("accuracy_low")),
                high=json_float(b.get("accuracy_high")), n=b.get("n"), n_train=b.get("n_train"),
                encoder=b.get("encoder"))
    return out


def confusion_counts(records: Sequence[Record]) -> dict[str, dict[str, int]]:
    """true class -> predicted class (``<none>``: no class named) -> count, over judged records."""
    out: dict[str, dict[str, int]] = {}
    for r in judged(records):
        row = out.setdefault(str(r["reference"]), {})
        key = str(r["prediction"]) if r.get("prediction") is not None else NO_CLASS
        row[key] = row.get(key, 0) + 1
    return out


def _confusions(run: EmtRun, arm: Arm, table: dict[str, TableRow]) -> list[Confusion]:
    """Before/after confusion matrices: the fine-tuning set and the other set this arm forgot most."""
    if arm.last_epoch == 0:
        return []
    chosen: list[tuple[str, str]] = []
    if run.fine_tuning_set in run.datasets:
        chosen.append((run.fine_tuning_set, "fine-tuning set"))
    forgotten = []
    for d in run.other_datasets:
        forgetting = table[d].forgetting
        value = json_float(forgetting.delta.value) if forgetting is not None else None
        if value is not None and not is_text_set(run, d):
            forgotten.append((value, d))
    if forgotten:
        value, dataset = max(forgotten, key=lambda t: (t[0], t[1]))
        chosen.append((dataset, "most forgotten other set" if value > 0 else "other set that lost the least"))
    return [Confusion(dataset=d, role=role, before_epoch=0, after_epoch=arm.last_epoch, classes=_class_order(run, d),
                      before=confusion_counts(run.base.get(d, [])),
                      after=confusion_counts(arm.epochs[arm.last_epoch].get(d, []))) for d, role in chosen]


def _class_order(run: EmtRun, dataset: str) -> list[str]:
    """Classes in the order the evaluator listed them (base metrics.json per_class), then the rest sorted."""
    listed = list(((run.base_metrics.get("datasets") or {}).get(dataset) or {}).get("per_class") or {})
    refs = {str(r["reference"]) for r in run.base.get(dataset, []) if r.get("reference") is not None}
    return listed + sorted(refs - set(listed), key=_natural)


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _alignment_point(row: Record, alpha: float) -> AlignmentPoint:
    n = int(row.get("n") or 0)
    top1 = row.get("top1")
    return AlignmentPoint(
        epoch=int(row.get("epoch", 0)), n=n, cosine_true=json_float(row.get("cosine_true")),
        cosine_margin=json_float(row.get("cosine_margin")), mean_rank=json_float(row.get("mean_rank")),
        # top1 is a share of n images: its interval is Wilson's; the cosines are means stored without samples
        top1=_wilson(round(top1 * n), n, alpha) if top1 is not None and n else None,
    )


def _alignment(run: EmtRun, arm: Arm) -> dict[str, list[AlignmentPoint]]:
    rows = [r for r in run.base_alignment if r.get("epoch", 0) == 0] + [r for r in arm.alignment
                                                                        if int(r.get("epoch", -1)) in arm.epochs]
    out: dict[str, list[AlignmentPoint]] = {}
    for row in rows:
        out.setdefault(row["dataset"], []).append(_alignment_point(row, run.alpha))
    for points in out.values():
        points.sort(key=lambda p: p.epoch)
    return out


def _loss_curve(train_log: Sequence[Record]) -> LossCurve | None:
    rows = [r for r in train_log if r.get("loss") is not None]
    if not rows:
        return None
    stride = max(1, math.ceil(len(rows) / LOSS_POINTS))
    kept = rows[::stride]
    return LossCurve(step=[int(r["step"]) for r in kept], epoch=[float(r.get("epoch", 0.0)) for r in kept],
                     loss=[json_float(r["loss"]) for r in kept], steps=len(rows), stride=stride)


def _class_subset(run: EmtRun, arm: Arm) -> ClassSubset:
    """Class-subset fine-tuning: held-in vs held-out class accuracy on the fine-tuning set, and whether the
    held-out classes collapse onto one predicted class (EMT's minority collapse)."""
    held_in = set(run.classes or [])
    points = []
    for epoch in sorted(arm.epochs):
        kept = judged(arm.epochs[epoch].get(run.fine_tuning_set, []))
        inside = [r for r in kept if r.get("label") in held_in]
        outside = [r for r in kept if r.get("label") not in held_in]
        in_names = {str(r["reference"]) for r in inside}
        out_predictions = [r.get("prediction") for r in outside]
        top_class, top_count = (Counter(p for p in out_predictions if p is not None).most_common(1) or [(None, 0)])[0]
        points.append(ClassSubsetPoint(
            epoch=epoch,
            held_in_accuracy=_wilson(sum(bool(r["correct"]) for r in inside), len(inside), run.alpha),
            held_out_accuracy=_wilson(sum(bool(r["correct"]) for r in outside), len(outside), run.alpha),
            held_out_top1_share=_wilson(top_count, len(outside), run.alpha),
            held_out_top1_class=top_class,
            held_out_as_held_in=_wilson(sum(1 for p in out_predictions if p is not None and str(p) in in_names),
                                        len(outside), run.alpha),
        ))
    last = points[-1]
    share = _est(last.held_out_top1_share)
    collapsed = bool(share and share["low"] is not None and share["low"] > 0.5 and last.epoch > 0)
    return ClassSubset(held_in_classes=sorted(held_in), points=points, collapsed=collapsed,
                       collapse_rule="held-out samples collapse when the Wilson lower bound of the share answered "
                                     "with one class exceeds 0.5 at the last epoch")


def _seed_summaries(run: EmtRun, arms: list[ArmSummary]) -> dict[str, SeedGroup]:
    """Per method and dataset: mean and spread over seeds of base, best and last accuracy and of forgetting, and
    the mean curve. These are seed spreads, not sample intervals."""
    out: dict[str, SeedGroup] = {}
    for method in dict.fromkeys(a.name for a in arms):
        group = [a for a in arms if a.name == method]
        per_dataset: dict[str, SeedFigures] = {}
        for d in run.datasets:
            last = [json_float(a.table[d].last.value) for a in group if a.table[d].last]
            best = [json_float(a.table[d].best.value) for a in group if a.table[d].best]
            forgetting = [json_float(a.table[d].forgetting.delta.value) for a in group if a.table[d].forgetting]
            epochs = sorted({p.epoch for a in group for p in a.curves[d]})
            curve = []
            for e in epochs:
                values = [json_float(p.accuracy.value) for a in group for p in a.curves[d]
                          if p.epoch == e and p.accuracy]
                if values:
                    curve.append(SeedCurvePoint(e, seed_summary(values)))  # type: ignore[arg-type]
            per_dataset[d] = SeedFigures(
                last=seed_summary(last) if last else None,  # type: ignore[arg-type]
                best=seed_summary(best) if best else None,  # type: ignore[arg-type]
                forgetting=seed_summary(forgetting) if forgetting else None,  # type: ignore[arg-type]
                curve=curve)
        out[method] = SeedGroup(seeds=[a.seed for a in group], datasets=per_dataset)
    return out


def _notes(run: EmtRun) -> list[str]:
    notes = []
    if not run.base_done:
        notes.append("The base evaluation is not finished (base/DONE missing): figures use the samples so far.")
    for arm in run.arms:
        if not arm.done:
            notes.append(f"{arm.label}: not finished (no DONE); epochs evaluated so far: {arm.tuned_epochs() or 'none'}.")
        if arm.partial_epochs:
            notes.append(f"{arm.label}: epoch(s) {arm.partial_epochs} only partly evaluated; left out of every figure.")
    return notes
