"""The Model Tailor study's summary (metrics.json), computed from its run folder only, as typed dataclasses.

Inputs (layout in :mod:`unforget.studies.tailor.run`): ``config.yaml``; ``base/samples.jsonl``; per target
``finetune/<target>/samples.jsonl``; per tailoring run ``<group>/<run>/spec.json``, ``tailor.json``,
``samples.jsonl`` and ``DONE``.

Per-sample scores are recomputed from the records and paired by (dataset, id) across models: correctness for
classification and VQA sets, CIDEr-D for caption sets (document frequencies from the set's references, so a
sample's score does not depend on the other models' captions).

- **retention** (original tasks, share of the base model): per dataset ``mean(tailored) / mean(base)``
  (`stats.retention`, paired bootstrap); pooled over the original datasets after dividing each dataset's scores by
  the base model's mean there, which makes the pooled figure the sample-weighted mean of the per-dataset
  retentions, whatever each dataset's scale (accuracy or CIDEr);
- **reach** (target tasks, share of the fine-tuned model): the same with the fine-tuned model as reference;
- the paper's headline (:mod:`.claims`) as verdicts on those intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ... import __version__
from ...config import read_yaml
from ...errors import DataError
from ...evaluation.captioning import caption_record_scores
from ...evaluation.scorers import record_score
from ...reports.names import display_names
from ...runs import read_json, read_jsonl
from ...stats import ClaimCheck, Estimate, bootstrap_interval, json_float, retention, wilson_interval
from ..preconditions import Preconditions, all_of, paired_change
from .config import MULTI, HeadlineCheck, TailoringArm
from .plan import plan_runs, target_groups
from ...runs.layout import CONFIG, DONE, SAMPLES

Record = dict[str, Any]  # one line of a samples.jsonl, as written (the scorers read these)


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class Evaluation:
    """One model's records, by dataset."""

    label: str
    folder: Path
    done: bool
    records: dict[str, list[Record]]


@dataclass
class TailoredRun(Evaluation):
    """A tailoring sub-run: its spec.json and, from its tailor.json, the changed fraction, options and seconds."""

    group: str = ""
    name: str = ""
    method: str = ""
    sparsity: float | None = None
    targets: list[str] = field(default_factory=list)
    changed_fraction: float | None = None
    options: dict[str, Any] | None = None  # the method's options (each method has its own)
    seconds: dict[str, float] | None = None  # per stage of `tailoring.base.StageSeconds`


@dataclass
class EvalFacts:
    """The evaluation settings the report states (from the config's ``eval:``)."""

    split: str | None = None
    mode: str | None = None
    limit: int | None = None
    judges: list[str] | None = None
    template: int | str | None = None


@dataclass
class TailorStudyRun:
    """A study folder read back: what its config.yaml asked for and every model's records."""

    path: Path
    name: str
    model: str | None
    original: list[str]
    targets: dict[str, str]  # target name -> dataset
    alpha: float
    headline: HeadlineCheck | None
    sparsities: list[float] | None
    eval: EvalFacts
    arms: list[TailoringArm]
    single_task: bool
    multi_task: bool
    base: Evaluation
    finetuned: dict[str, Evaluation]
    runs: list[TailoredRun]

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.runs))

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label on the page (:func:`unforget.reports.names.display_names`)."""
        return display_names([*self.original, *self.targets.values()])


def _by_dataset(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


def _evaluation(label: str, folder: Path) -> Evaluation:
    return Evaluation(label, folder, (folder / DONE).exists(), _by_dataset(read_jsonl(folder / SAMPLES)))


def _tailored_run(group: str, sub: Path) -> TailoredRun:
    spec = read_json(sub / "spec.json")
    result = read_json(sub / "tailor.json") if (sub / "tailor.json").is_file() else {}
    ev = _evaluation(sub.name, sub)
    return TailoredRun(sub.name, sub, ev.done, ev.records, group=group, name=str(spec["name"]),
                       method=str(spec["method"]), sparsity=spec.get("sparsity"),
                       targets=list(spec.get("targets") or [group]),
                       changed_fraction=json_float(result.get("changed_fraction")), options=result.get("options"),
                       seconds=result.get("seconds"))


def read_tailor_run(run_dir: str | Path) -> TailorStudyRun:
    path = Path(run_dir)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise DataError(f"{path} has no config.yaml: it is not a tailor study folder (run `unforget study tailor`)")
    cfg = read_yaml(config_path)
    targets = {str(t["name"]): str(t["dataset"]) for t in cfg.get("targets") or []}
    if not targets:
        raise DataError(f"{config_path}: no `targets:` listed, so there is nothing to report")
    base = _evaluation("base", path / "base")
    if not base.records:
        raise DataError(f"{path / 'base' / SAMPLES} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study tailor` on this config to finish it")
    finetuned = {t: _evaluation(f"fine-tuned ({t})", path / "finetune" / t) for t in targets}
    runs = []
    for group in [*targets, MULTI]:
        folder = path / group
        if folder.is_dir():
            runs += [_tailored_run(group, sub) for sub in sorted(folder.iterdir()) if (sub / "spec.json").is_file()]
    arms = [TailoringArm(str(m["name"]), str(m.get("method")), dict(m.get("options") or {}), m.get("sweep"))
            for m in cfg.get("methods") or []]
    order = {a.name: i for i, a in enumerate(arms)}
    runs.sort(key=lambda r: ([*targets, MULTI].index(r.group), order.get(r.name, len(order)), r.sparsity or 0.0))
    head = cfg.get("headline")
    ev = cfg.get("eval") or {}
    return TailorStudyRun(path=path, name=cfg.get("name", path.name), model=(cfg.get("model") or {}).get("name"),
                          original=[str(d) for d in cfg.get("original") or []], targets=targets,
                          alpha=float(cfg.get("alpha", 0.05)),
                          headline=HeadlineCheck(**head) if head is not None else None,
                          sparsities=cfg.get("sparsities"),
                          eval=EvalFacts(**{k: ev.get(k) for k in ("split", "mode", "limit", "judges", "template")}),
                          arms=arms, single_task=bool(cfg.get("single_task", True)),
                          multi_task=bool(cfg.get("multi_task", True)), base=base, finetuned=finetuned, runs=runs)


# ------------------------------------------------------------------------------------------- the summary


def _estimate(e: Estimate | None) -> dict[str, Any] | None:
    return e.to_dict() if e is not None else None


@dataclass
class ScoreEstimate:
    """A dataset's score with its interval: accuracy (Wilson) or mean CIDEr-D (bootstrap)."""

    estimate: Estimate
    metric: str  # accuracy | cider | score (a benchmark set's mean per-sample score)

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "metric": self.metric}


@dataclass
class RelativeScore:
    """A model as a share of a reference model: per dataset and pooled; ``notes`` say why a share is undefined."""

    pooled: Estimate | None
    per_dataset: dict[str, Estimate | None]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"pooled": _estimate(self.pooled), "per_dataset": {d: _estimate(e) for d, e in self.per_dataset.items()},
                "notes": list(self.notes)}


@dataclass
class Reach:
    """A model's share of each target's fine-tuned model on that target, and pooled over a group's targets."""

    pooled: Estimate | None
    per_target: dict[str, Estimate | None]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"pooled": _estimate(self.pooled), "per_target": {t: _estimate(e) for t, e in self.per_target.items()},
                "notes": list(self.notes)}


Scores = dict[str, ScoreEstimate | None]  # dataset reference -> its score (None: no scored sample)


def _scores_dict(scores: Scores) -> dict[str, Any]:
    return {d: s.to_dict() if s is not None else None for d, s in scores.items()}


@dataclass
class BaseSummary:
    done: bool
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "scores": _scores_dict(self.scores)}


@dataclass
class FinetunedSummary:
    """A target's fine-tuned model: what it kept of the original tasks, what it gained on its target."""

    done: bool
    retention: RelativeScore
    gain_over_base: Estimate | None
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "retention": self.retention.to_dict(),
                "gain_over_base": _estimate(self.gain_over_base), "scores": _scores_dict(self.scores)}


@dataclass
class RunSummary:
    """One tailored model (``folder``: its sub-run folder's name in the group)."""

    group: str
    folder: str
    name: str
    method: str
    sparsity: float | None
    done: bool
    changed_fraction: float | None
    options: dict[str, Any] | None
    seconds: dict[str, float] | None
    retention: RelativeScore
    reach: Reach
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "folder": self.folder, "name": self.name, "method": self.method,
                "sparsity": self.sparsity, "done": self.done, "changed_fraction": self.changed_fraction,
                "options": self.options, "seconds": self.seconds, "retention": self.retention.to_dict(),
                "reach": self.reach.to_dict(), "scores": _scores_dict(self.scores)}


@dataclass
class GroupSummary:
    """The targets grafted together, the base model's reach on them, and each tailored model."""

    targets: list[str]
    base_reach: Reach
    runs: list[RunSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "base_reach": self.base_reach.to_dict(),
                "runs": [r.to_dict() for r in self.runs]}


@dataclass
class HeadlineClaim:
    """One of the paper's claims for a group (``id``: keep | reach), checked at ``sparsity`` (None: no run to check
    it on) with ``details`` per dataset or target."""

    group: str
    id: str
    check: ClaimCheck
    sparsity: float | None = None
    details: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "id": self.id}
        if self.sparsity is not None:
            out["sparsity"] = self.sparsity
        out.update(self.check.to_dict())
        if self.details is not None:
            out["details"] = list(self.details)
        return out


@dataclass
class TailorSummary:
    """The study's numbers (metrics.json); ``claims`` are filled in by :func:`.claims.check_claims`."""

    unforget: str
    run_dir: str
    name: str
    model: str | None
    original: list[str]
    targets: dict[str, str]  # target name -> dataset
    alpha: float
    headline: HeadlineCheck | None
    sparsities: list[float] | None
    eval: EvalFacts
    base: BaseSummary
    finetuned: dict[str, FinetunedSummary]
    groups: dict[str, GroupSummary]
    missing_runs: list[str]
    claims: list[HeadlineClaim] = field(default_factory=list)
    preconditions: Preconditions = field(default_factory=lambda: Preconditions([]))

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label on the page (:func:`unforget.reports.names.display_names`)."""
        return display_names([*self.original, *self.targets.values()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": "tailor", "unforget": self.unforget, "run_dir": self.run_dir, "name": self.name,
            "model": self.model, "original": list(self.original), "targets": dict(self.targets), "alpha": self.alpha,
            "confidence": self.confidence, "headline": asdict(self.headline) if self.headline is not None else None,
            "sparsities": self.sparsities, "eval": asdict(self.eval), "base": self.base.to_dict(),
            "finetuned": {t: f.to_dict() for t, f in self.finetuned.items()},
            "groups": {g: d.to_dict() for g, d in self.groups.items()},
            "preconditions": self.preconditions.to_dict(),
            "claims": [c.to_dict() for c in self.claims], "missing_runs": list(self.missing_runs),
        }


# -------------------------------------------------------------------------------------------------- scores


def is_caption(records: Sequence[Record]) -> bool:
    return any(r.get("task") == "caption" for r in records)


def sample_scores(records: Sequence[Record]) -> dict[str, float]:
    """Per sample id: the benchmark score of a benchmark set's record (VQA accuracy...), else 1/0 correctness
    (classification, VQA; unjudged left out), or CIDEr-D (caption sets)."""
    if is_caption(records):
        return caption_record_scores(records)
    scores = {r["id"]: record_score(r) for r in records}
    return {i: v for i, v in scores.items() if v is not None}


def paired_scores(reference: dict[str, float], other: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    ids = [i for i in reference if i in other]
    return np.array([reference[i] for i in ids]), np.array([other[i] for i in ids])


def score_estimate(records: Sequence[Record], alpha: float) -> ScoreEstimate | None:
    """The dataset's score with its interval: accuracy (Wilson) or mean CIDEr-D (bootstrap)."""
    scores = np.array(list(sample_scores(records).values()))
    if scores.size == 0:
        return None
    if is_caption(records):
        return ScoreEstimate(bootstrap_interval(lambda s: s.mean(axis=-1), scores, confidence=1.0 - alpha), "cider")
    if not np.isin(scores, (0.0, 1.0)).all():  # fractional benchmark scores (VQA accuracy): no binomial interval
        return ScoreEstimate(bootstrap_interval(lambda s: s.mean(axis=-1), scores, confidence=1.0 - alpha), "score")
    return ScoreEstimate(wilson_interval(int(scores.sum()), scores.size, 1.0 - alpha), "accuracy")


def relative_score(reference: Evaluation, other: Evaluation, datasets: Sequence[str],
                   alpha: float, names: Mapping[str, str] | None = None) -> RelativeScore:
    """``other`` as a share of ``reference`` on ``datasets``: per dataset and pooled (see the module doc).
    ``names``: the datasets' labels in the notes (default: the references)."""
    names = names or {}
    per_dataset: dict[str, Estimate | None] = {}
    pooled_ref: list[np.ndarray] = []
    pooled_other: list[np.ndarray] = []
    notes = []
    for d in datasets:
        ref, oth = paired_scores(sample_scores(reference.records.get(d, [])),
                                 sample_scores(other.records.get(d, [])))
        if ref.size == 0:
            per_dataset[d] = None
            notes.append(f"{names.get(d, d)}: no sample scored by both models")
            continue
        if ref.mean() == 0:
            per_dataset[d] = None
            notes.append(f"{names.get(d, d)}: the {reference.label} model scores 0, so a share of it is undefined")
            continue
        per_dataset[d] = retention(ref, oth, confidence=1.0 - alpha)
        pooled_ref.append(ref / ref.mean())
        pooled_other.append(oth / ref.mean())
    pooled = None
    if pooled_ref:
        pooled = retention(np.concatenate(pooled_ref), np.concatenate(pooled_other), confidence=1.0 - alpha)
    return RelativeScore(pooled, per_dataset, notes)


def _group_targets(run: TailorStudyRun, group: str) -> list[str]:
    return list(run.targets) if group == MULTI else [group]


def _reach(run: TailorStudyRun, other: Evaluation, targets: Sequence[str]) -> Reach:
    """Reach on each target (against its own fine-tuned model) and pooled over the group's targets."""
    per_target = {t: relative_score(run.finetuned[t], other, [run.targets[t]], run.alpha, run.names)
                  for t in targets}
    pooled_ref, pooled_other = [], []
    for t in targets:
        d = run.targets[t]
        ref, oth = paired_scores(sample_scores(run.finetuned[t].records.get(d, [])),
                                 sample_scores(other.records.get(d, [])))
        if ref.size and ref.mean() > 0:
            pooled_ref.append(ref / ref.mean())
            pooled_other.append(oth / ref.mean())
    pooled = (retention(np.concatenate(pooled_ref), np.concatenate(pooled_other), confidence=1.0 - run.alpha)
              if pooled_ref else None)
    return Reach(pooled, {t: r.per_dataset[run.targets[t]] for t, r in per_target.items()},
                 [n for r in per_target.values() for n in r.notes])


def _scores(run: TailorStudyRun, ev: Evaluation, datasets: Sequence[str]) -> Scores:
    return {d: score_estimate(ev.records.get(d, []), run.alpha) for d in datasets}


def _run_summary(run: TailorStudyRun, sub: TailoredRun) -> RunSummary:
    targets = _group_targets(run, sub.group)
    datasets = [*run.original, *(run.targets[t] for t in targets)]
    return RunSummary(group=sub.group, folder=sub.label, name=sub.name, method=sub.method, sparsity=sub.sparsity,
                      done=sub.done, changed_fraction=sub.changed_fraction, options=sub.options,
                      seconds=sub.seconds, retention=relative_score(run.base, sub, run.original, run.alpha, run.names),
                      reach=_reach(run, sub, targets), scores=_scores(run, sub, datasets))


def _finetuned_summary(run: TailorStudyRun, target: str, ev: Evaluation) -> FinetunedSummary:
    return FinetunedSummary(
        done=ev.done, retention=relative_score(run.base, ev, run.original, run.alpha, run.names),
        gain_over_base=relative_score(run.base, ev, [run.targets[target]], run.alpha, run.names).pooled,
        scores=_scores(run, ev, [*run.original, run.targets[target]]))


def _missing_runs(run: TailorStudyRun) -> list[str]:
    """``group/folder`` of every run the config asks for (the study's plan) that has not finished."""
    groups = target_groups(list(run.targets), run.single_task, run.multi_task)
    planned = plan_runs(groups, run.arms, run.sparsities or [])
    found = {(r.group, r.label) for r in run.runs if r.done}
    return [f"{s.group}/{s.folder_name}" for s in planned if (s.group, s.folder_name) not in found]


def summarise_numbers(run_dir: str | Path) -> TailorSummary:
    """The study's numbers, computed from the run folder only (the claims are checked on them afterwards)."""
    run = read_tailor_run(run_dir)
    groups = {}
    for group in run.groups:
        targets = _group_targets(run, group)
        groups[group] = GroupSummary(targets, _reach(run, run.base, targets),
                                     [_run_summary(run, sub) for sub in run.runs if sub.group == group])
    return TailorSummary(
        unforget=__version__, run_dir=str(run.path), name=run.name, model=run.model, original=run.original,
        targets=run.targets, alpha=run.alpha, headline=run.headline, sparsities=run.sparsities, eval=run.eval,
        base=BaseSummary(run.base.done, _scores(run, run.base, [*run.original, *run.targets.values()])),
        finetuned={t: _finetuned_summary(run, t, ev) for t, ev in run.finetuned.items()},
        groups=groups, missing_runs=_missing_runs(run), preconditions=tailor_preconditions(run))


# the claim ids (`.claims`) that lean on each precondition: reach is a share of a fine-tuned model that must have
# learnt its target, and keeping the original tasks is no feat for a patch of a fine-tune that changed nothing
PRECONDITION_CLAIMS: dict[str, tuple[str, ...]] = {"finetunes-learn": ("reach", "keep")}


def tailor_preconditions(run: TailorStudyRun) -> Preconditions:
    """Each target's fine-tuned model beats the base model on its own target, paired on the same samples: a
    one-sided exact McNemar test on correct/incorrect, a paired bootstrap on CIDEr-D or fractional scores."""
    parts = []
    for target, dataset in run.targets.items():
        base_scores = sample_scores(run.base.records.get(dataset, []))
        tuned_scores = sample_scores(run.finetuned[target].records.get(dataset, []))
        before, after = paired_scores(base_scores, tuned_scores)
        binary = bool(np.isin(np.concatenate([before, after]), (0.0, 1.0)).all()) and not is_caption(
            run.base.records.get(dataset, []))
        parts.append(paired_change("finetunes-learn", "", [float(x) for x in before], [float(x) for x in after],
                                   "positive", run.alpha,
                                   f"{target} ({run.names.get(dataset, dataset)}): base -> fine-tuned "
                                   f"({'accuracy' if binary else 'mean score'})", scores=not binary))
    return Preconditions([all_of("finetunes-learn", "Each fine-tune beats the base model on its own target",
                                 parts)])


__all__ = ["BaseSummary", "EvalFacts", "FinetunedSummary", "GroupSummary", "HeadlineClaim", "Reach",
           "RelativeScore", "RunSummary", "ScoreEstimate", "TailorStudyRun", "TailorSummary", "read_tailor_run",
           "relative_score", "sample_scores", "score_estimate", "summarise_numbers"]
