"""The 2x2 study's summary (metrics.json), computed from its run folder only.

Inputs (layout in :mod:`unforget.studies.twobytwo`): ``config.yaml``; ``cells.json`` (the dataset name each cell's
records carry); ``base/samples.jsonl`` (epoch 0); per run
``spec.json`` (what it trains), ``samples.jsonl`` (its judged answers on the four cells), ``metrics.json``
(trainable parameters, training sources), ``probe.jsonl`` (the judge-free probe, when measured),
``language.jsonl`` (answer log-likelihood and held-out perplexity, when a "text" set is among ``extra_datasets``)
and ``DONE``.

Every figure is recomputed from the judged records, pairing the same (dataset, id) across evaluations:

- accuracy per cell with a Wilson interval; forgetting = base - tuned (`stats.forgetting_delta`, exact McNemar,
  Newcombe interval); gain = tuned - base on the target cell;
- the Pareto front of target gain against forgetting (on the three other cells, and on the two OOD-image cells);
- the paper's claims as `stats.check_claim` verdicts (:mod:`.claims`);
- the judge-free probe per run (KL from the base model per cell, label mass) against the measured forgetting, with
  Spearman's rank correlation across runs (:mod:`unforget.studies.probing`);
- language forgetting per run: accuracy on the text set, answer log-likelihood and held-out perplexity with
  bootstrap intervals over items, and their change from the base model paired on the same items
  (:mod:`unforget.reports.language`).

``summarise_twobytwo(run_dir)`` returns the typed :class:`TwoByTwoSummary`; its ``to_dict()`` is metrics.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ... import __version__
from ...reports.language import change_sentence, change_verdicts
from ..language_scores import language_point
from ..probing import probe_mean, rank_correlation
from ...stats import Estimate, PairedTest, forgetting_delta, wilson_interval
from ..preconditions import Precondition, Preconditions, any_of, hold_back, paired_change
from .claims import ClaimResult, check_claims
from .config import CELL_KEYS, CELL_LABELS, OOD_IMAGE_CELLS, OTHER_CELLS, TARGET_CELL
from .records import (
    Record,
    RunRecords,
    TwoByTwoRun,
    judged,
    paired_flags,
    pooled,
    read_twobytwo_run,
    sweep_method_names,
)

PROBE_UNIT = "run"


# ------------------------------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class CellMetrics:
    """One cell before and after fine-tuning, on the samples judged in both: accuracies with Wilson intervals,
    ``forgetting`` = base - tuned (exact McNemar; its ``delta`` is positive when the model forgot)."""

    base: Estimate
    after: Estimate
    forgetting: PairedTest

    @property
    def n(self) -> int:
        return self.forgetting.delta.n

    @property
    def gain(self) -> float:
        return -self.forgetting.delta.value

    @property
    def gain_interval(self) -> Estimate:
        return self.forgetting.delta.negated()

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "base": self.base.to_dict(), "after": self.after.to_dict(),
                "forgetting": self.forgetting.to_dict(), "gain": self.gain_interval.to_dict()}


def cell_metrics(base_records: Sequence[Record], tuned_records: Sequence[Record],
                 alpha: float = 0.05) -> CellMetrics | None:
    """Base vs tuned on one cell (or on cells pooled); None when no sample was judged in both."""
    before, after = paired_flags(base_records, tuned_records)
    if not before:
        return None
    test = forgetting_delta(before, after, alpha=alpha)
    assert test.before is not None and test.after is not None
    return CellMetrics(base=test.before, after=test.after, forgetting=test)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points (forgetting, gain) that no other point beats: none has forgetting <= and gain >=,
    one of them strictly. Points with a missing or non-finite coordinate are never on the front. Sorted by
    forgetting, then by gain (highest first)."""
    valid = [(i, float(x), float(y)) for i, (x, y) in enumerate(points)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    front = []
    for i, x, y in valid:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, x2, y2 in valid if j != i)
        if not dominated:
            front.append((x, -y, i))
    return [i for _, _, i in sorted(front)]


@dataclass(frozen=True)
class HeatmapData:
    """``values[r][c]``: the figure of method ``rows[r]`` at learning rate ``cols[c]`` (None: no such run)."""

    rows: list[str]
    cols: list[str]
    values: list[list[float | None]]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "values": self.values}


def sweep_grid(points: Sequence[Mapping[str, Any]], value_key: str,
               methods: Sequence[str] | None = None) -> HeatmapData:
    """The (method x learning rate) grid of ``point[value_key]`` over sweep points (mappings with ``method_name``,
    ``lr``). Rows follow ``methods`` (default: first seen), columns the learning rates in increasing order."""
    rows = list(methods) if methods is not None else list(dict.fromkeys(p["method_name"] for p in points))
    lrs = sorted({p["lr"] for p in points if p.get("lr") is not None})
    cols = [f"{lr:g}" for lr in lrs]
    values: list[list[float | None]] = [[None] * len(lrs) for _ in rows]
    for p in points:
        if p["method_name"] in rows and p.get("lr") in lrs:
            values[rows.index(p["method_name"])][lrs.index(p["lr"])] = p.get(value_key)
    return HeatmapData(rows, cols, values)


# ------------------------------------------------------------------------------------------------- the summary


@dataclass
class RunPoint:
    """One run against the base model: per cell, pooled over the three other cells and over the two OOD-image
    cells; ``pareto_*``: on the front of target gain against that forgetting."""

    name: str
    kind: str  # sweep or hybrid
    method_name: str
    method: str | None
    options: dict[str, Any]  # the fine-tuning method's options
    lr: float | None
    epochs: int
    ratio: float | None  # hybrid: the share of other data
    mix_by: str | None
    done: bool
    trainable_parameters: int | None
    total_parameters: int | None
    train_examples: dict[str, int] | None  # training source -> examples it gave
    final_loss: float | None
    cells: dict[str, CellMetrics | None]  # cell key -> its metrics (None: nothing judged in both)
    other: CellMetrics | None  # the three cells besides the target, pooled
    ood_image: CellMetrics | None  # the two OOD-image cells, pooled
    pareto_other: bool = False
    pareto_ood_image: bool = False

    @property
    def after(self) -> dict[str, float | None]:
        return {c: (m.after.value if m else None) for c, m in self.cells.items()}

    @property
    def forgetting(self) -> dict[str, float | None]:
        return {c: (m.forgetting.delta.value if m else None) for c, m in self.cells.items()}

    @property
    def target_gain(self) -> float | None:
        target = self.cells[TARGET_CELL]
        return target.gain if target else None

    @property
    def target_gain_interval(self) -> Estimate | None:
        target = self.cells[TARGET_CELL]
        return target.gain_interval if target else None

    @property
    def forgetting_other(self) -> float | None:
        return self.other.forgetting.delta.value if self.other else None

    @property
    def forgetting_ood_image(self) -> float | None:
        return self.ood_image.forgetting.delta.value if self.ood_image else None

    def to_dict(self) -> dict[str, Any]:
        gain = self.target_gain_interval
        return {
            "name": self.name, "kind": self.kind, "method_name": self.method_name, "method": self.method,
            "options": self.options, "lr": self.lr, "epochs": self.epochs, "ratio": self.ratio,
            "mix_by": self.mix_by, "done": self.done, "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters, "train_examples": self.train_examples,
            "final_loss": self.final_loss,
            "cells": {c: (m.to_dict() if m else None) for c, m in self.cells.items()},
            "after": self.after,
            "forgetting": self.forgetting,
            "target_gain": self.target_gain,
            "target_gain_interval": gain.to_dict() if gain else None,
            "forgetting_other": self.forgetting_other,
            "forgetting_other_test": self.other.forgetting.to_dict() if self.other else None,
            "forgetting_ood_image": self.forgetting_ood_image,
            "forgetting_ood_image_test": self.ood_image.forgetting.to_dict() if self.ood_image else None,
            "pareto_other": self.pareto_other,
            "pareto_ood_image": self.pareto_ood_image,
        }


@dataclass(frozen=True)
class SweepHeatmaps:
    """The sweep at one number of epochs: forgetting per cell and trainable parameters over (method, lr)."""

    cells: dict[str, HeatmapData]  # cell key -> its forgetting grid
    trainable_parameters: HeatmapData

    def to_dict(self) -> dict[str, Any]:
        return {**{c: g.to_dict() for c, g in self.cells.items()},
                "trainable_parameters": self.trainable_parameters.to_dict()}


@dataclass(frozen=True)
class ProbePoint:
    """One run's probe after training (KL from the base model, label mass) beside its measured forgetting."""

    name: str
    kind: str
    group: str  # the sweep method, or "hybrid"
    epoch: int | None
    kl: float | None  # over every probe sample
    kl_cells: dict[str, float | None]  # cell key -> mean KL over its probe samples
    kl_ood_image: float | None
    kl_other: float | None
    label_mass: dict[str, Any] | None  # the probe row's estimate (an `stats.Estimate.to_dict()`), as written
    label_mass_value: float | None
    forgetting_ood_image: float | None
    forgetting_other: float | None
    forgetting_cells: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "group": self.group, "epoch": self.epoch, "kl": self.kl,
                "kl_cells": self.kl_cells, "kl_ood_image": self.kl_ood_image, "kl_other": self.kl_other,
                "label_mass": self.label_mass, "label_mass_value": self.label_mass_value,
                "forgetting_ood_image": self.forgetting_ood_image, "forgetting_other": self.forgetting_other,
                "forgetting_cells": self.forgetting_cells}


@dataclass(frozen=True)
class ProbeCorrelations:
    """Spearman's rho across runs (`studies.probing.rank_correlation` results) of the probe against forgetting."""

    ood_image: dict[str, Any]  # KL against forgetting on the OOD-image cells
    other: dict[str, Any]  # KL against forgetting on the three other cells
    label_mass_ood_image: dict[str, Any]  # label mass against forgetting on the OOD-image cells

    def to_dict(self) -> dict[str, Any]:
        return {"ood_image": self.ood_image, "other": self.other, "label_mass_ood_image": self.label_mass_ood_image}


@dataclass(frozen=True)
class ProbeSummary:
    label_set: str | None
    base_label_mass: float | None
    probe_samples: dict[str, int | None]  # cell key -> probe samples of the base model
    points: list[ProbePoint]
    correlation: ProbeCorrelations
    missing: list[str]  # runs without a probe row

    def to_dict(self) -> dict[str, Any]:
        return {"label_set": self.label_set, "base_label_mass": self.base_label_mass,
                "probe_samples": self.probe_samples, "points": [p.to_dict() for p in self.points],
                "correlation": self.correlation.to_dict(), "missing": self.missing}


@dataclass(frozen=True)
class LanguagePoint:
    """One run's language scores: ``scores`` is `reports.language.language_point`'s result (epoch, the scores with
    intervals, their change); ``verdicts`` only when the base model's row exists."""

    name: str
    scores: dict[str, Any]
    accuracy_change: Estimate | None  # tuned - base text accuracy on the same prompts
    verdicts: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, **self.scores,
               "accuracy_change": self.accuracy_change.to_dict() if self.accuracy_change else None}
        if self.verdicts is not None:
            out["verdicts"] = self.verdicts
        return out


@dataclass(frozen=True)
class LanguageSummary:
    dataset: str | None
    confidence: float
    base: dict[str, Any] | None  # the base model's `language_point`
    points: list[LanguagePoint]
    sentences: list[str]
    missing: list[str]  # runs without a language row

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "confidence": self.confidence, "base": self.base,
                "points": [p.to_dict() for p in self.points], "sentences": self.sentences, "missing": self.missing}


@dataclass(frozen=True)
class EvalFacts:
    """The evaluation settings of config.yaml's ``eval:`` the page shows."""

    split: Any
    mode: Any
    limit: Any
    judges: Any

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "mode": self.mode, "limit": self.limit, "judges": self.judges}


@dataclass(frozen=True)
class SweepFacts:
    methods: list[Any]  # the sweep's method names
    epochs: list[int] | None

    def to_dict(self) -> dict[str, Any]:
        return {"methods": self.methods, "epochs": self.epochs}


@dataclass(frozen=True)
class HybridFacts:
    ratios: list[float] | None
    budget: int | None
    mix_by: list[str] | None
    mix_strategy: str | None
    sources: list[Any]  # the sources' names

    def to_dict(self) -> dict[str, Any]:
        return {"ratios": self.ratios, "budget": self.budget, "mix_by": self.mix_by,
                "mix_strategy": self.mix_strategy, "sources": self.sources}


@dataclass(frozen=True)
class TwoByTwoSummary:
    """Everything the 2x2 report shows, computed from the run folder; ``to_dict()`` is its metrics.json."""

    run_dir: str
    name: str
    model: str | None
    fine_tuning_set: str
    cells: dict[str, str]  # cell key -> dataset reference
    alpha: float
    margin: float
    eval: EvalFacts
    sweep: SweepFacts
    hybrid: HybridFacts
    base_done: bool
    base: dict[str, Estimate | None]  # cell key -> the base model's accuracy
    runs: list[RunPoint]
    heatmaps: dict[int, SweepHeatmaps]  # epochs -> the sweep's grids
    claims: list[ClaimResult]
    probe: ProbeSummary | None
    language: LanguageSummary | None
    notes: list[str]
    preconditions: Preconditions = field(default_factory=lambda: Preconditions([]))
    unforget: str = __version__
    cell_labels: dict[str, str] = field(default_factory=lambda: dict(CELL_LABELS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": "2x2",
            "unforget": self.unforget,
            "run_dir": self.run_dir,
            "name": self.name,
            "model": self.model,
            "fine_tuning_set": self.fine_tuning_set,
            "cells": self.cells,
            "cell_labels": self.cell_labels,
            "alpha": self.alpha,
            "margin": self.margin,
            "eval": self.eval.to_dict(),
            "sweep": self.sweep.to_dict(),
            "hybrid": self.hybrid.to_dict(),
            "base_done": self.base_done,
            "base": {c: (e.to_dict() if e else None) for c, e in self.base.items()},
            "runs": [r.to_dict() for r in self.runs],
            "heatmaps": {str(epochs): h.to_dict() for epochs, h in self.heatmaps.items()},
            "preconditions": self.preconditions.to_dict(),
            "claims": [c.to_dict() for c in self.claims],
            "probe": self.probe.to_dict() if self.probe else None,
            "language": self.language.to_dict() if self.language else None,
            "notes": self.notes,
        }


def summarise_twobytwo(run_dir: str | Path) -> TwoByTwoSummary:
    """The study's numbers, computed from the run folder only."""
    run = read_twobytwo_run(run_dir)
    points = [_run_point(run, r) for r in run.runs]
    for i in pareto_front([(p.forgetting_other, p.target_gain) for p in points]):
        points[i].pareto_other = True
    for i in pareto_front([(p.forgetting_ood_image, p.target_gain) for p in points]):
        points[i].pareto_ood_image = True
    cfg = run.config
    sweep_cfg, hybrid_cfg, eval_cfg = cfg.get("sweep") or {}, cfg.get("hybrid") or {}, cfg.get("eval") or {}
    preconditions = twobytwo_preconditions(run)
    claims = [replace(c, check=hold_back(c.check, c.id, preconditions, PRECONDITION_CLAIMS)) for c in check_claims(run)]
    return TwoByTwoSummary(
        run_dir=str(run.path),
        name=cfg.get("name", run.path.name),
        model=(cfg.get("model") or {}).get("name"),
        fine_tuning_set=(cfg.get("train") or {}).get("dataset") or run.cells[TARGET_CELL],
        cells=run.cells,
        alpha=run.alpha,
        margin=run.margin,
        eval=EvalFacts(eval_cfg.get("split"), eval_cfg.get("mode"), eval_cfg.get("limit"), eval_cfg.get("judges")),
        sweep=SweepFacts(sweep_method_names(cfg), sweep_cfg.get("epochs")),
        hybrid=HybridFacts(hybrid_cfg.get("ratios"), hybrid_cfg.get("budget"), hybrid_cfg.get("mix_by"),
                           hybrid_cfg.get("mix_strategy"), [s.get("name") for s in hybrid_cfg.get("sources") or []]),
        base_done=run.base_done,
        base={cell: _accuracy(run.base.get(cell, []), run.alpha) for cell in CELL_KEYS},
        runs=points,
        heatmaps=_heatmaps(run, points),
        claims=claims,
        probe=probe_summary(run, points),
        language=language_summary(run),
        notes=_notes(run),
        preconditions=preconditions,
    )


# the claim ids (`.claims`) that lean on each precondition: with it failed, they are judged on nothing
PRECONDITION_CLAIMS: dict[str, tuple[str, ...]] = {
    "target-gain": ("task-alone-overfits-ood-text", "hybrid-recovers-ood-text", "hybrid-keeps-target-gain"),
    "sweep-learns-target": ("no-ood-image-forgetting", "lower-lr-forgets-less", "fewer-parameters-forget-less"),
}


def target_improves(run: TwoByTwoRun, r: RunRecords, precondition_id: str, name: str) -> Precondition:
    """Run ``r``'s accuracy on the target cell rises above the base model's (one-sided exact McNemar, paired)."""
    before, after = paired_flags(run.base.get(TARGET_CELL, []), r.records.get(TARGET_CELL, []))
    return paired_change(precondition_id, name, before, after, "positive", run.alpha,
                         f"{r.name}: accuracy on {CELL_LABELS[TARGET_CELL]}")


def twobytwo_preconditions(run: TwoByTwoRun) -> Preconditions:
    """What the claims need of the run itself: the task-alone fine-tune (hybrid r=0, the reference of every hybrid
    claim) learns its target; some sweep run learns it (otherwise "does not forget" holds for a model that did
    nothing)."""
    checks = []
    plain = next((r for r in run.runs if r.kind == "hybrid" and r.ratio == 0.0), None)
    if plain is not None:
        checks.append(target_improves(run, plain, "target-gain",
                                      f"The task-alone fine-tune ({plain.name}) improves the target cell over the "
                                      "base model"))
    sweep = [r for r in run.runs if r.kind == "sweep"]
    if sweep:
        checks.append(any_of("sweep-learns-target", "Some sweep run improves the target cell over the base model",
                             [target_improves(run, r, "sweep-learns-target", "") for r in sweep]))
    return Preconditions(checks)


def _run_point(run: TwoByTwoRun, r: RunRecords) -> RunPoint:
    metrics = r.metrics or {}
    method = r.spec.get("method") or {}
    return RunPoint(
        name=r.name, kind=r.kind, method_name=r.method_name, method=method.get("method"),
        options=method.get("options") or {}, lr=r.lr, epochs=r.epochs, ratio=r.spec.get("ratio"),
        mix_by=r.spec.get("mix_by"), done=r.done, trainable_parameters=r.trainable_parameters,
        total_parameters=metrics.get("total_parameters"), train_examples=metrics.get("train_examples"),
        final_loss=metrics.get("final_loss"),
        cells={c: cell_metrics(run.base.get(c, []), r.records.get(c, []), run.alpha) for c in CELL_KEYS},
        other=cell_metrics(pooled(run.base, OTHER_CELLS), pooled(r.records, OTHER_CELLS), run.alpha),
        ood_image=cell_metrics(pooled(run.base, OOD_IMAGE_CELLS), pooled(r.records, OOD_IMAGE_CELLS), run.alpha),
    )


def _heatmaps(run: TwoByTwoRun, points: Sequence[RunPoint]) -> dict[int, SweepHeatmaps]:
    """Per number of epochs, the sweep's grids over (method, learning rate), methods in the config's order."""
    sweep = [p for p in points if p.kind == "sweep"]
    methods = [m for m in sweep_method_names(run.config) if any(p.method_name == m for p in sweep)]
    heatmaps = {}
    for epochs in sorted({p.epochs for p in sweep}):
        at = [p for p in sweep if p.epochs == epochs]
        grids = {cell: sweep_grid([{"method_name": p.method_name, "lr": p.lr, "value": p.forgetting.get(cell)}
                                   for p in at], "value", methods) for cell in CELL_KEYS}
        params = sweep_grid([{"method_name": p.method_name, "lr": p.lr, "value": p.trainable_parameters}
                             for p in at], "value", methods)
        heatmaps[epochs] = SweepHeatmaps(grids, params)
    return heatmaps


def probe_summary(run: TwoByTwoRun, points: Sequence[RunPoint]) -> ProbeSummary | None:
    """The judge-free probe of every run against its measured forgetting.

    Per run: the probe's KL on each cell, on the two OOD-image cells and on the three other cells (means over their
    probe samples), the mass on the fine-tuning labels, and the forgetting measured on the same cells (paired, from
    the summary's points). Spearman's rho across runs says whether the probe orders the runs as the judged
    evaluation does; the OOD-image cells are the ones the paper's claims are about.
    """
    if run.base_probe is None and not any(r.probe for r in run.runs):
        return None
    names = run.names or run.cells
    rows = []
    for r, p in zip(run.runs, points):
        if r.probe is None:
            continue
        mass = r.probe.get("label_mass")
        rows.append(ProbePoint(
            name=r.name, kind=r.kind, group=r.method_name if r.kind == "sweep" else "hybrid",
            epoch=r.probe.get("epoch"),
            kl=(r.probe.get("kl") or {}).get("value"),
            kl_cells={c: probe_mean(r.probe, [names[c]]) for c in CELL_KEYS},
            kl_ood_image=probe_mean(r.probe, [names[c] for c in OOD_IMAGE_CELLS]),
            kl_other=probe_mean(r.probe, [names[c] for c in OTHER_CELLS]),
            label_mass=mass, label_mass_value=mass["value"] if mass else None,
            forgetting_ood_image=p.forgetting_ood_image, forgetting_other=p.forgetting_other,
            forgetting_cells=p.forgetting,
        ))
    base = run.base_probe or {}
    row_dicts = [p.to_dict() for p in rows]
    return ProbeSummary(
        label_set=base.get("label_set") or next((r.probe.get("label_set") for r in run.runs if r.probe), None),
        base_label_mass=base.get("base_label_mass") or (base.get("label_mass") or {}).get("value"),
        probe_samples={c: ((base.get("by_dataset") or {}).get(names[c]) or {}).get("n") for c in CELL_KEYS},
        points=rows,
        correlation=ProbeCorrelations(
            ood_image=rank_correlation(row_dicts, "kl_ood_image", "forgetting_ood_image", PROBE_UNIT),
            other=rank_correlation(row_dicts, "kl_other", "forgetting_other", PROBE_UNIT),
            label_mass_ood_image=rank_correlation(row_dicts, "label_mass_value", "forgetting_ood_image", PROBE_UNIT),
        ),
        missing=[r.name for r in run.runs if r.probe is None],
    )


def language_summary(run: TwoByTwoRun) -> LanguageSummary | None:
    """Language forgetting per run: the judged accuracy on the text set, answer log-likelihood and held-out
    perplexity (bootstrap intervals over items) and their change from the base model (paired on the same items),
    with a sentence per run. None when no language.jsonl row exists (no "text" set among extra_datasets, or
    language.enabled false)."""
    if run.base_language is None and not any(r.language for r in run.runs):
        return None
    confidence = 1.0 - run.alpha
    base = (language_point(run.base_language, None, confidence, _accuracy_dict(run.base_text, run.alpha))
            if run.base_language else None)
    points, sentences = [], []
    for r in run.runs:
        if r.language is None:
            continue
        scores = language_point(r.language, run.base_language, confidence, _accuracy_dict(r.text_records, run.alpha))
        text_change = cell_metrics(run.base_text, r.text_records, run.alpha)
        verdicts = None
        if base is not None:
            verdicts = change_verdicts(scores)
            sentences.append(change_sentence(r.name, scores, base, confidence))
        points.append(LanguagePoint(r.name, scores, text_change.gain_interval if text_change else None, verdicts))
    dataset = (run.base_language or next(r.language for r in run.runs if r.language) or {}).get("dataset")
    return LanguageSummary(dataset=dataset, confidence=confidence, base=base, points=points, sentences=sentences,
                           missing=[r.name for r in run.runs if r.language is None])


def _accuracy(records: Sequence[Record], alpha: float) -> Estimate | None:
    kept = judged(records)
    if not kept:
        return None
    return wilson_interval(sum(bool(r["correct"]) for r in kept), len(kept), 1.0 - alpha)


def _accuracy_dict(records: Sequence[Record], alpha: float) -> dict[str, Any] | None:
    estimate = _accuracy(records, alpha)
    return estimate.to_dict() if estimate else None


def _notes(run: TwoByTwoRun) -> list[str]:
    notes = []
    if not run.base_done:
        notes.append("The base evaluation is not finished (base/DONE missing): figures use the samples so far.")
    for r in run.runs:
        if not r.done:
            notes.append(f"{r.name}: not finished (no DONE); its figures use the samples judged so far.")
        if r.trainable_parameters is None:
            notes.append(f"{r.name}: no metrics.json yet, so its trainable-parameter count is unknown.")
    return notes
