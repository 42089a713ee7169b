"""The EMT study's summary (metrics.json) and report, computed from its run folder only.

Inputs (layout in :mod:`unforget.studies.emt`): ``config.yaml``; ``base/samples.jsonl`` (epoch 0) and
``base/metrics.json`` (vision-encoder baselines); per arm ``samples.jsonl`` (tagged with epoch and seed),
``alignment.jsonl``, ``probe.jsonl``, ``language.jsonl`` (judge-free language scores, with their per-item values),
``metrics.json`` (which epochs finished), ``train_result.json`` and ``train/train_log.jsonl``.

Every accuracy and rate is recomputed from the judged records, so that comparisons can pair the same sample ids:

- accuracies and rates carry Wilson intervals at ``1 - alpha``;
- forgetting (base - last) and every claim use exact McNemar tests on the samples judged in both evaluations
  (`stats.forgetting_delta`, `stats.mcnemar_exact`, `stats.check_claim`);
- with several seeds, the spread over seeds (`stats.seed_summary`) is reported apart from sample intervals;
- answer log-likelihood and held-out perplexity carry percentile bootstrap intervals over items, and their change
  from the base model is paired on the same items (:mod:`.language`).

``summarise_emt(run_dir)`` returns the JSON-ready summary; ``write_emt_report(run_dir)`` writes it as
``metrics.json`` with ``report.html``, ``report.md`` and ``plots/*.png`` (the page is built in
:mod:`unforget.reports.emt_page`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..config import read_yaml
from ..errors import DataError
from ..runs import atomic_write_json, read_json, read_jsonl
from ..stats import (
    ClaimCheck,
    Estimate,
    PairedTest,
    bootstrap_interval,
    check_claim,
    forgetting_delta,
    json_float,
    mcnemar_exact,
    seed_summary,
    wilson_interval,
)
from .base import REPORTS, ReportKind
from .document import ReportFiles
from .language import LANGUAGE_FILE, change_sentence, change_verdicts, language_point
from .names import display_names
from .probe import probe_mean, rank_correlation

log = logging.getLogger(__name__)

NO_CLASS = "<none>"
ENTROPY_RESAMPLES = 1000
LOSS_POINTS = 2000  # the loss curve kept in metrics.json is thinned to at most this many steps


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class Arm:
    """One fine-tuning arm as found on disk. ``epochs[e][dataset]`` lists its records; epoch 0 is the base model."""

    name: str
    method: str
    seed: int
    folder: Path
    done: bool
    epochs: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    partial_epochs: list[int] = field(default_factory=list)  # in samples.jsonl but not finished
    alignment: list[dict[str, Any]] = field(default_factory=list)
    train_log: list[dict[str, Any]] = field(default_factory=list)
    train_result: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    probe: list[dict[str, Any]] = field(default_factory=list)  # probe.jsonl rows of finished epochs
    language: list[dict[str, Any]] = field(default_factory=list)  # language.jsonl rows of finished epochs

    @property
    def label(self) -> str:
        return self.folder.name

    @property
    def last_epoch(self) -> int:
        return max(self.epochs)

    def tuned_epochs(self) -> list[int]:
        return sorted(e for e in self.epochs if e > 0)


@dataclass
class EmtRun:
    path: Path
    config: dict[str, Any]
    fine_tuning_set: str
    datasets: list[str]
    alpha: float
    seeds: list[int]
    classes: list[int] | None
    base: dict[str, list[dict[str, Any]]]
    base_done: bool
    base_metrics: dict[str, Any]
    base_alignment: list[dict[str, Any]]
    arms: list[Arm]
    base_probe: list[dict[str, Any]] = field(default_factory=list)
    base_language: list[dict[str, Any]] = field(default_factory=list)

    @property
    def other_datasets(self) -> list[str]:
        return [d for d in self.datasets if d != self.fine_tuning_set]

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label in sentences and on the page (:func:`.names.display_names`)."""
        return display_names([*self.datasets, self.fine_tuning_set])

    def listed(self, datasets: Sequence[str]) -> str:
        return ", ".join(self.names[d] for d in datasets)


def arm_folder_name(name: str, seed: int, seeds: Sequence[int]) -> str:
    """The arm's folder: the rule of ``unforget.studies.emt.arm_folder`` (not imported: that pulls in torch)."""
    return name if len(seeds) == 1 else f"{name}-s{seed}"


def read_emt_run(run_dir: str | Path) -> EmtRun:
    path = Path(run_dir)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{path} has no config.yaml: it is not an EMT run folder (run `unforget study emt` first)")
    cfg = read_yaml(config_path)
    train = cfg.get("train") or {}
    evaluation = cfg.get("eval") or {}
    ft = str(train.get("dataset", "digits"))
    seeds = [int(s) for s in (cfg.get("seeds") or [0])]
    methods = cfg.get("methods") or []
    if not methods:
        raise DataError(f"{config_path}: no `methods:` listed, so there is no fine-tuning arm to report")
    base_records = [r for r in read_jsonl(path / "base" / "samples.jsonl") if r.get("epoch", 0) == 0]
    if not base_records:
        raise DataError(f"{path / 'base' / 'samples.jsonl'} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study emt` on this config to finish it")
    base_metrics_path = path / "base" / "metrics.json"
    base_metrics = read_json(base_metrics_path) if base_metrics_path.exists() else {}
    datasets = list(dict.fromkeys([*(evaluation.get("datasets") or []), *(r["dataset"] for r in base_records)]))
    base = _by_dataset(base_records)
    arms = []
    for seed in seeds:
        for spec in methods:
            folder = path / arm_folder_name(str(spec["name"]), seed, seeds)
            if folder.is_dir():
                arms.append(_read_arm(folder, str(spec["name"]), str(spec.get("method", spec["name"])), seed, base))
    classes = train.get("classes")
    return EmtRun(path=path, config=cfg, fine_tuning_set=ft, datasets=datasets, alpha=float(cfg.get("alpha", 0.05)),
                  seeds=seeds, classes=[int(c) for c in classes] if classes else None, base=base,
                  base_done=(path / "base" / "DONE").exists(), base_metrics=base_metrics,
                  base_alignment=read_jsonl(path / "base" / "alignment.jsonl"), arms=arms,
                  base_probe=[r for r in read_jsonl(path / "base" / "probe.jsonl") if r.get("epoch", 0) == 0],
                  base_language=[r for r in read_jsonl(path / "base" / LANGUAGE_FILE) if r.get("epoch", 0) == 0])


def _read_arm(folder: Path, name: str, method: str, seed: int, base: dict[str, list[dict]]) -> Arm:
    records = [r for r in read_jsonl(folder / "samples.jsonl") if r.get("seed", seed) == seed]
    by_epoch: dict[int, list[dict]] = {}
    for r in records:
        by_epoch.setdefault(int(r.get("epoch", -1)), []).append(r)
    metrics_path = folder / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else None
    # metrics.json gains an epoch only once that epoch's evaluation finished: it says which epochs are complete
    finished = {int(e) for e in (metrics or {}).get("epochs", {})} if metrics else set(by_epoch)
    arm = Arm(name=name, method=method, seed=seed, folder=folder, done=(folder / "DONE").exists(), metrics=metrics)
    arm.epochs[0] = base
    for epoch in sorted(by_epoch):
        if epoch <= 0:
            continue
        if epoch in finished:
            arm.epochs[epoch] = _by_dataset(by_epoch[epoch])
        else:
            arm.partial_epochs.append(epoch)
    arm.alignment = read_jsonl(folder / "alignment.jsonl")
    arm.probe = [r for r in read_jsonl(folder / "probe.jsonl")
                 if r.get("seed", seed) == seed and int(r.get("epoch", -1)) in arm.epochs]
    arm.language = [r for r in read_jsonl(folder / LANGUAGE_FILE)
                    if r.get("seed", seed) == seed and int(r.get("epoch", -1)) in arm.epochs]
    arm.train_log = read_jsonl(folder / "train" / "train_log.jsonl")
    result_path = folder / "train_result.json"
    arm.train_result = read_json(result_path) if result_path.exists() else None
    return arm


def _by_dataset(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


# --------------------------------------------------------------------------------------------- per-epoch figures


def judged(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with a verdict: skipped samples and judge failures (correct None) are left out, as in the metrics."""
    return [r for r in records if not r.get("skipped") and r.get("correct") is not None]


def _wilson(k: int, n: int, alpha: float) -> dict[str, Any] | None:
    return wilson_interval(k, n, 1.0 - alpha).to_dict() if n else None


def normalised_entropy_estimate(predictions: Sequence[str], num_classes: int, alpha: float,
                                n_resamples: int = ENTROPY_RESAMPLES) -> dict[str, Any] | None:
    """Entropy of the predicted-class histogram / log2(num_classes), with a bootstrap interval over samples.
    ``predictions`` are the answers that named a class (as in `evaluation.metrics.prediction_concentration`)."""
    if not predictions:
        return None
    if num_classes <= 1:
        return Estimate(0.0, 0.0, 0.0, len(predictions), "bootstrap_percentile", 1.0 - alpha).to_dict()
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

    est = bootstrap_interval(statistic, codes, n_resamples=n_resamples, confidence=1.0 - alpha, seed=0)
    return est.to_dict()


def epoch_figures(records: Sequence[dict[str, Any]], fine_tuning_set: str, num_classes: int,
                  alpha: float) -> dict[str, Any]:
    """Accuracy, label-leak, no-class and concentration figures of one dataset at one epoch."""
    kept = judged(records)
    n = len(kept)
    named = [r["prediction"] for r in kept if r.get("prediction") is not None]
    top_class, top_count = Counter(named).most_common(1)[0] if named else (None, 0)
    return {
        "n": n,
        "accuracy": _wilson(sum(bool(r["correct"]) for r in kept), n, alpha),
        "leak_rate": _wilson(sum(bool((r.get("leaks") or {}).get(fine_tuning_set)) for r in kept), n, alpha),
        "no_class_rate": _wilson(n - len(named), n, alpha),
        "top1_share": _wilson(top_count, len(named), alpha),
        "top1_class": top_class,
        "normalised_entropy": normalised_entropy_estimate(named, num_classes, alpha),
        "unjudged": sum(1 for r in records if not r.get("skipped") and r.get("correct") is None),
        "skipped": sum(1 for r in records if r.get("skipped")),
    }


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


# ------------------------------------------------------------------------------------------------- pairing


def paired_flags(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
                 key: str = "correct", fine_tuning_set: str | None = None) -> tuple[list[bool], list[bool]]:
    """Per-sample flags of the samples judged in both lists, matched by (dataset, id), in ``before``'s order.
    ``key`` "correct" pairs correctness; "leak" pairs whether the answer named a ``fine_tuning_set`` label."""
    after_by_id = {(r["dataset"], r["id"]): r for r in judged(after)}
    a, b = [], []
    for r in judged(before):
        other = after_by_id.get((r["dataset"], r["id"]))
        if other is None:
            continue
        a.append(_flag(r, key, fine_tuning_set))
        b.append(_flag(other, key, fine_tuning_set))
    return a, b


def _flag(record: dict[str, Any], key: str, fine_tuning_set: str | None) -> bool:
    if key == "leak":
        return bool((record.get("leaks") or {}).get(fine_tuning_set))
    return bool(record[key])


def _pooled(per_dataset: dict[str, list[dict]], datasets: Sequence[str]) -> list[dict]:
    return [r for d in datasets for r in per_dataset.get(d, [])]


# ------------------------------------------------------------------------------------------------- summary


def summarise_emt(run_dir: str | Path) -> dict[str, Any]:
    """The study's numbers, computed from the run folder only, as a JSON-ready dict (written as metrics.json)."""
    run = read_emt_run(run_dir)
    counts = {d: class_count(d, run) for d in run.datasets}
    text_sets = [d for d in run.datasets if _is_text_set(run, d)]
    arms = [_summarise_arm(run, arm, counts) for arm in run.arms]
    summary: dict[str, Any] = {
        "study": "emt",
        "unforget": __version__,
        "run_dir": str(run.path),
        "name": run.config.get("name", run.path.name),
        "model": (run.config.get("model") or {}).get("name"),
        "fine_tuning_set": run.fine_tuning_set,
        "classes": run.classes,
        "datasets": run.datasets,
        "other_datasets": run.other_datasets,
        "class_counts": counts,
        # sets of plain-text answers (the "text" set): no classes, so no concentration or confusion matrix
        "text_datasets": text_sets,
        "alpha": run.alpha,
        "confidence": 1.0 - run.alpha,
        "seeds": run.seeds,
        "eval": {k: (run.config.get("eval") or {}).get(k) for k in ("split", "mode", "limit", "judges", "template")},
        "base_done": run.base_done,
        "baselines": _baselines(run),
        "base": {d: epoch_figures(run.base.get(d, []), run.fine_tuning_set, counts[d], run.alpha)
                 for d in run.datasets},
        "base_alignment": {row["dataset"]: _alignment_point(row, run.alpha) for row in run.base_alignment
                           if row.get("epoch", 0) == 0},
        "arms": arms,
        "seed_summaries": _seed_summaries(run, arms) if len(run.seeds) > 1 else {},
        "claims": [c for c in _claims(run)],
        "probe": probe_summary(run),
        "language": language_summary(run, arms),
        "notes": _notes(run),
    }
    missing = [spec["name"] for spec in run.config.get("methods") or []
               if not any(a.name == spec["name"] for a in run.arms)]
    summary["missing_arms"] = missing
    return summary


def _summarise_arm(run: EmtRun, arm: Arm, counts: dict[str, int]) -> dict[str, Any]:
    curves = {d: [{"epoch": e, **epoch_figures(arm.epochs[e].get(d, []), run.fine_tuning_set, counts[d], run.alpha)}
                  for e in sorted(arm.epochs)] for d in run.datasets}
    table = {d: _table_row(run, arm, d, curves[d]) for d in run.datasets}
    out: dict[str, Any] = {
        "name": arm.name, "method": arm.method, "seed": arm.seed, "folder": arm.label, "done": arm.done,
        "epochs": sorted(arm.epochs), "partial_epochs": arm.partial_epochs, "last_epoch": arm.last_epoch,
        "curves": curves,
        "table": table,
        "confusion": _confusions(run, arm, table),
        "alignment": _alignment(run, arm),
        "loss": _loss_curve(arm.train_log),
        "train": {k: v for k, v in (arm.train_result or {}).items() if k != "losses"} or None,
        "class_subset": _class_subset(run, arm) if run.classes else None,
        "format_knowledge": format_knowledge_curves(run, arm),
    }
    return out


def format_knowledge_curves(run: EmtRun, arm: Arm) -> dict[str, list[dict[str, Any]]] | None:
    """Per dataset and epoch: wrong answers split into "format broke" (the exact judge rejects the answer, the
    likelihood ranking still puts the true class first) and "knowledge lost" (both wrong). Only runs evaluated in
    generate mode with ``eval.also_rank: true`` have both verdicts; None otherwise."""
    from ..evaluation.metrics import split_records

    out: dict[str, list[dict[str, Any]]] = {}
    for d in run.datasets:
        for epoch in sorted(arm.epochs):
            split = split_records(arm.epochs[epoch].get(d, []), confidence=1.0 - run.alpha)
            if split is not None:
                out.setdefault(d, []).append({"epoch": epoch, **split.to_dict()})
    return out or None


def probe_summary(run: EmtRun) -> dict[str, Any] | None:
    """The judge-free probe per arm and epoch, and how well its KL tracks measured forgetting.

    Per point (arm, fine-tuned epoch): the probe's KL on the other datasets (mean over their probe samples) and the
    measured forgetting there (base accuracy - epoch accuracy, paired on the samples judged in both). Spearman's rank
    correlation over all points of all arms says whether the cheap probe orders runs as the judged evaluation does.
    """
    if not run.base_probe and not any(a.probe for a in run.arms):
        return None
    others = run.other_datasets or run.datasets
    base_rows = [{**r, "epoch": 0} for r in run.base_probe[-1:]]
    curves: dict[str, list[dict[str, Any]]] = {}
    points: list[dict[str, Any]] = []
    for arm in run.arms:
        rows = {int(r["epoch"]): r for r in [*base_rows, *arm.probe]}
        curve = []
        for epoch in sorted(rows):
            r = rows[epoch]
            kl_others = probe_mean(r, others, "kl")
            curve.append({"epoch": epoch, "kl": r.get("kl"), "kl_others": kl_others,
                          "label_mass": r.get("label_mass"), "base_label_mass": r.get("base_label_mass"),
                          "by_dataset": r.get("by_dataset") or {}})
            if epoch > 0 and epoch in arm.epochs and kl_others is not None:
                before, after = paired_flags(_pooled(run.base, others), _pooled(arm.epochs[epoch], others))
                if before:
                    points.append({"arm": arm.label, "name": arm.name, "epoch": epoch, "kl": kl_others,
                                   "forgetting": (sum(before) - sum(after)) / len(before), "n": len(before)})
        curves[arm.label] = curve
    return {"datasets": others, "label_set": next((r.get("label_set") for r in [*run.base_probe, *(
        p for a in run.arms for p in a.probe)] if r.get("label_set")), None), "curves": curves,
            "points": points, "correlation": kl_forgetting_correlation(points)}


def language_summary(run: EmtRun, arms: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The judge-free language scores per arm and epoch (epoch 0: the base model), with the judged accuracy on the
    text set beside them, and per arm a sentence on its last epoch against the base model. None when no
    language.jsonl row was written (no "text" set evaluated, or language.enabled false)."""
    if not run.base_language and not any(a.language for a in run.arms):
        return None
    confidence = 1.0 - run.alpha
    base_row = run.base_language[-1] if run.base_language else None
    dataset = next(r.get("dataset") for r in [*run.base_language, *(x for a in run.arms for x in a.language)])
    curves: dict[str, list[dict[str, Any]]] = {}
    verdicts = []
    base_point = language_point(base_row, None, confidence) if base_row else None
    for arm, summary in zip(run.arms, arms):
        accuracy = {p["epoch"]: p.get("accuracy") for p in (summary["curves"].get(dataset) or [])}
        rows = {int(r["epoch"]): r for r in ([base_row] if base_row else []) + arm.language}
        curve = [language_point(rows[e], base_row, confidence, accuracy.get(e)) for e in sorted(rows)]
        curves[arm.label] = curve
        tuned = [p for p in curve if p["epoch"] > 0]
        if base_point is not None and tuned:
            last = tuned[-1]
            verdicts.append({"arm": arm.label, "epoch": last["epoch"], **change_verdicts(last),
                             "sentence": change_sentence(_who(run, arm), last, base_point, confidence)})
    return {"dataset": dataset, "confidence": confidence, "base": base_point, "curves": curves,
            "verdicts": verdicts, "missing_base": base_row is None}


def kl_forgetting_correlation(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Spearman's rho (scipy.stats.spearmanr) between probe KL and measured forgetting over (arm, epoch) points."""
    return rank_correlation(points, "kl", "forgetting", "(method, epoch)")


def _table_row(run: EmtRun, arm: Arm, dataset: str, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Base / best fine-tuned epoch / last epoch / forgetting (base - last, paired) of one dataset."""
    by_epoch = {p["epoch"]: p for p in curve}
    tuned = [p for p in curve if p["epoch"] > 0 and p["accuracy"] is not None]
    best = max(tuned, key=lambda p: (p["accuracy"]["value"], -p["epoch"])) if tuned else None
    last = by_epoch.get(arm.last_epoch) if arm.last_epoch > 0 else None
    forgetting = None
    if last is not None:
        before, after = paired_flags(run.base.get(dataset, []), arm.epochs[arm.last_epoch].get(dataset, []))
        if before:
            forgetting = forgetting_delta(before, after, alpha=run.alpha).to_dict()
    return {
        "base": by_epoch[0]["accuracy"],
        "best_epoch": best["epoch"] if best else None,
        "best": best["accuracy"] if best else None,
        "last_epoch": arm.last_epoch if last else None,
        "last": last["accuracy"] if last else None,
        "forgetting": forgetting,
    }


def _baselines(run: EmtRun) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dataset, doc in (run.base_metrics.get("datasets") or {}).items():
        for kind, b in (doc.get("baselines") or {}).items():
            out.setdefault(dataset, {})[kind] = {
                "value": json_float(b.get("accuracy")), "low": json_float(b.get("accuracy_low")),
                "high": json_float(b.get("accuracy_high")), "n": b.get("n"), "n_train": b.get("n_train"),
                "encoder": b.get("encoder"), "method": "wilson",
            }
    return out


def confusion_counts(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """true class -> predicted class (``<none>``: no class named) -> count, over judged records."""
    out: dict[str, dict[str, int]] = {}
    for r in judged(records):
        row = out.setdefault(str(r["reference"]), {})
        key = str(r["prediction"]) if r.get("prediction") is not None else NO_CLASS
        row[key] = row.get(key, 0) + 1
    return out


def _confusions(run: EmtRun, arm: Arm, table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Before/after confusion matrices: the fine-tuning set and the other set this arm forgot most."""
    if arm.last_epoch == 0:
        return []
    chosen: list[tuple[str, str]] = []
    if run.fine_tuning_set in run.datasets:
        chosen.append((run.fine_tuning_set, "fine-tuning set"))
    forgotten = [(table[d]["forgetting"]["delta"]["value"], d) for d in run.other_datasets
                 if table[d]["forgetting"] and table[d]["forgetting"]["delta"]["value"] is not None
                 and not _is_text_set(run, d)]
    if forgotten:
        value, dataset = max(forgotten, key=lambda t: (t[0], t[1]))
        chosen.append((dataset, "most forgotten other set" if value > 0 else "other set that lost the least"))
    return [{"dataset": d, "role": role, "before_epoch": 0, "after_epoch": arm.last_epoch,
             "classes": _class_order(run, d),
             "before": confusion_counts(run.base.get(d, [])),
             "after": confusion_counts(arm.epochs[arm.last_epoch].get(d, []))} for d, role in chosen]


def _is_text_set(run: EmtRun, dataset: str) -> bool:
    """Whether the base evaluation's records of ``dataset`` are plain-text questions (task "text")."""
    return any(r.get("task") == "text" for r in run.base.get(dataset, []))


def _class_order(run: EmtRun, dataset: str) -> list[str]:
    """Classes in the order the evaluator listed them (base metrics.json per_class), then the rest sorted."""
    listed = list(((run.base_metrics.get("datasets") or {}).get(dataset) or {}).get("per_class") or {})
    refs = {str(r["reference"]) for r in run.base.get(dataset, []) if r.get("reference") is not None}
    return listed + sorted(refs - set(listed), key=_natural)


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _alignment_point(row: dict[str, Any], alpha: float) -> dict[str, Any]:
    n = int(row.get("n") or 0)
    top1 = row.get("top1")
    return {
        "epoch": int(row.get("epoch", 0)), "n": n, "cosine_true": json_float(row.get("cosine_true")),
        "cosine_margin": json_float(row.get("cosine_margin")), "mean_rank": json_float(row.get("mean_rank")),
        # top1 is a share of n images: its interval is Wilson's; the cosines are means stored without samples
        "top1": _wilson(round(top1 * n), n, alpha) if top1 is not None and n else None,
    }


def _alignment(run: EmtRun, arm: Arm) -> dict[str, list[dict[str, Any]]]:
    rows = [r for r in run.base_alignment if r.get("epoch", 0) == 0] + [r for r in arm.alignment
                                                                        if int(r.get("epoch", -1)) in arm.epochs]
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["dataset"], []).append(_alignment_point(row, run.alpha))
    for points in out.values():
        points.sort(key=lambda p: p["epoch"])
    return out


def _loss_curve(train_log: Sequence[dict[str, Any]]) -> dict[str, list[float]] | None:
    rows = [r for r in train_log if r.get("loss") is not None]
    if not rows:
        return None
    stride = max(1, math.ceil(len(rows) / LOSS_POINTS))
    kept = rows[::stride]
    return {"step": [int(r["step"]) for r in kept], "epoch": [float(r.get("epoch", 0.0)) for r in kept],
            "loss": [json_float(r["loss"]) for r in kept], "steps": len(rows), "stride": stride}


def _class_subset(run: EmtRun, arm: Arm) -> dict[str, Any]:
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
        points.append({
            "epoch": epoch,
            "held_in_accuracy": _wilson(sum(bool(r["correct"]) for r in inside), len(inside), run.alpha),
            "held_out_accuracy": _wilson(sum(bool(r["correct"]) for r in outside), len(outside), run.alpha),
            # share of ALL held-out samples answered with the single most common class
            "held_out_top1_share": _wilson(top_count, len(outside), run.alpha),
            "held_out_top1_class": top_class,
            "held_out_as_held_in": _wilson(sum(1 for p in out_predictions if p is not None and str(p) in in_names),
                                           len(outside), run.alpha),
        })
    last = points[-1]
    share = last["held_out_top1_share"]
    collapsed = bool(share and share["low"] is not None and share["low"] > 0.5 and last["epoch"] > 0)
    return {"held_in_classes": sorted(held_in), "points": points, "collapsed": collapsed,
            "collapse_rule": "held-out samples collapse when the Wilson lower bound of the share answered with one "
                             "class exceeds 0.5 at the last epoch"}


def _seed_summaries(run: EmtRun, arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and dataset: mean and spread over seeds of base, best and last accuracy and of forgetting, and
    the mean curve. These are seed spreads, not sample intervals."""
    out: dict[str, Any] = {}
    for method in dict.fromkeys(a["name"] for a in arms):
        group = [a for a in arms if a["name"] == method]
        per_dataset: dict[str, Any] = {}
        for d in run.datasets:
            figures: dict[str, Any] = {}
            for key in ("last", "best"):
                values = [a["table"][d][key]["value"] for a in group if a["table"][d][key]]
                figures[key] = seed_summary(values).to_dict() if values else None
            forgetting = [a["table"][d]["forgetting"]["delta"]["value"] for a in group if a["table"][d]["forgetting"]]
            figures["forgetting"] = seed_summary(forgetting).to_dict() if forgetting else None
            epochs = sorted({p["epoch"] for a in group for p in a["curves"][d]})
            curve = []
            for e in epochs:
                values = [p["accuracy"]["value"] for a in group for p in a["curves"][d]
                          if p["epoch"] == e and p["accuracy"]]
                if values:
                    curve.append({"epoch": e, **seed_summary(values).to_dict()})
            figures["curve"] = curve
            per_dataset[d] = figures
        out[method] = {"seeds": [a["seed"] for a in group], "datasets": per_dataset}
    return out


# ------------------------------------------------------------------------------------------------- claims


def _claims(run: EmtRun) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for arm in run.arms:
        out.append(_claim_early_helps(run, arm))
        out.append(_claim_long_degrades(run, arm))
        out.append(_claim_labels_leak(run, arm))
    projector = [a for a in run.arms if a.method == "projector"]
    lora = [a for a in run.arms if a.method == "lora"]
    for p in projector:
        for q in lora:
            if p.seed == q.seed:
                out.append(_claim_projector_retains(run, p, q))
    return out


def _who(run: EmtRun, arm: Arm) -> str:
    return arm.name if len(run.seeds) == 1 else f"{arm.name}, seed {arm.seed}"


def _claim_dict(claim_id: str, check: ClaimCheck, arm: str, details: list[str] | None = None,
                **extra: Any) -> dict[str, Any]:
    return {"id": claim_id, "arm": arm, **check.to_dict(), "details": details or [], **extra}


def _not_shown(claim: str, why: str) -> ClaimCheck:
    return ClaimCheck(claim=claim, held=None, verdict="not shown", evidence=why)


def _per_dataset_details(run: EmtRun, before: dict[str, list[dict]], after: dict[str, list[dict]],
                         datasets: Sequence[str], key: str = "correct", what: str = "accuracy") -> list[str]:
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
           delta_of: str) -> ClaimCheck:
    test: PairedTest = replace(mcnemar_exact(before, after, alpha=alpha), delta_of=delta_of)
    return check_claim(claim, test, expect, subject=subject)  # type: ignore[arg-type]


def _claim_early_helps(run: EmtRun, arm: Arm) -> dict[str, Any]:
    claim = f"Early fine-tuning ({_who(run, arm)}) helps the other datasets: epoch 1 beats the base model"
    others = run.other_datasets
    if not others:
        return _claim_dict("early-fine-tuning-helps", _not_shown(claim, "only the fine-tuning set was evaluated"),
                           arm.label)
    if 1 not in arm.epochs:
        return _claim_dict("early-fine-tuning-helps", _not_shown(claim, "epoch 1 has not been evaluated yet"),
                           arm.label)
    before, after = paired_flags(_pooled(run.base, others), _pooled(arm.epochs[1], others))
    if not before:
        return _claim_dict("early-fine-tuning-helps", _not_shown(claim, "no sample was judged in both evaluations"),
                           arm.label)
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on the other datasets ({run.listed(others)})", "epoch 1 - base")
    return _claim_dict("early-fine-tuning-helps", check, arm.label,
                       _per_dataset_details(run, run.base, arm.epochs[1], others), compared=[0, 1])


def _claim_long_degrades(run: EmtRun, arm: Arm) -> dict[str, Any]:
    claim = (f"Longer fine-tuning ({_who(run, arm)}) degrades the other datasets: the last epoch is worse than "
             "the best epoch")
    others = run.other_datasets
    tuned = arm.tuned_epochs()
    if not others:
        return _claim_dict("long-fine-tuning-degrades", _not_shown(claim, "only the fine-tuning set was evaluated"),
                           arm.label)
    if len(tuned) < 2:
        return _claim_dict("long-fine-tuning-degrades",
                           _not_shown(claim, f"needs at least 2 evaluated epochs; this arm has {len(tuned)}"),
                           arm.label)
    pooled = {e: judged(_pooled(arm.epochs[e], others)) for e in tuned}
    accuracy = {e: (sum(bool(r["correct"]) for r in rs) / len(rs) if rs else -1.0) for e, rs in pooled.items()}
    best = max(tuned, key=lambda e: (accuracy[e], -e))
    last = tuned[-1]
    if best == last:
        why = (f"the best epoch on the other datasets is the last one (epoch {last}, accuracy "
               f"{accuracy[last]:.3f}): no decline after the peak to test")
        return _claim_dict("long-fine-tuning-degrades", _not_shown(claim, why), arm.label, compared=[best, last])
    before, after = paired_flags(pooled[best], pooled[last])
    check = _check(claim, before, after, run.alpha, "negative",
                   f"accuracy on the other datasets ({run.listed(others)})",
                   f"last (epoch {last}) - best (epoch {best})")
    note = (f"The best epoch ({best}) was picked on these same samples, which favours finding a decline; "
            "read a borderline p with that in mind.")
    details = [note, *_per_dataset_details(run, arm.epochs[best], arm.epochs[last], others)]
    return _claim_dict("long-fine-tuning-degrades", check, arm.label, details, compared=[best, last])


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


def _claim_labels_leak(run: EmtRun, arm: Arm) -> dict[str, Any]:
    claim = (f"Fine-tuning ({_who(run, arm)}) makes the model answer other datasets' questions with "
             f"{run.names[run.fine_tuning_set]} labels: the label-leak rate rises from the base model to the last "
             "epoch")
    usable, shared = leak_datasets(run)
    extra = ([f"left out (shares labels with {run.names[run.fine_tuning_set]}): {run.listed(shared)}"]
             if shared else [])
    if not usable:
        why = "no other dataset whose answers can be told apart from fine-tuning labels was evaluated"
        return _claim_dict("fine-tuning-labels-leak", _not_shown(claim, why), arm.label, extra)
    if arm.last_epoch == 0:
        return _claim_dict("fine-tuning-labels-leak", _not_shown(claim, "no fine-tuned epoch has been evaluated"),
                           arm.label, extra)
    last = arm.last_epoch
    before, after = paired_flags(_pooled(run.base, usable), _pooled(arm.epochs[last], usable), "leak",
                                 run.fine_tuning_set)
    if not before:
        return _claim_dict("fine-tuning-labels-leak", _not_shown(claim, "no sample was judged in both evaluations"),
                           arm.label, extra)
    check = _check(claim, before, after, run.alpha, "positive",
                   f"share of answers naming {run.names[run.fine_tuning_set]} labels on {run.listed(usable)}",
                   f"last (epoch {last}) - base")
    details = extra + _per_dataset_details(run, run.base, arm.epochs[last], usable, "leak", "label-leak rate")
    return _claim_dict("fine-tuning-labels-leak", check, arm.label, details, compared=[0, last])


def _claim_projector_retains(run: EmtRun, projector: Arm, lora: Arm) -> dict[str, Any]:
    seed = "" if len(run.seeds) == 1 else f", seed {projector.seed}"
    claim = (f"Projector-only fine-tuning ({projector.name}) retains more than LoRA ({lora.name}{seed}) on the other "
             "datasets at the last epoch")
    others = run.other_datasets
    arms = f"{projector.label}~{lora.label}"
    if not others:
        return _claim_dict("projector-retains-more", _not_shown(claim, "only the fine-tuning set was evaluated"), arms)
    if projector.last_epoch == 0 or lora.last_epoch == 0:
        return _claim_dict("projector-retains-more", _not_shown(claim, "an arm has no evaluated epoch yet"), arms)
    lo, pr = lora.epochs[lora.last_epoch], projector.epochs[projector.last_epoch]
    before, after = paired_flags(_pooled(lo, others), _pooled(pr, others))
    if not before:
        return _claim_dict("projector-retains-more", _not_shown(claim, "the two arms share no judged sample"), arms)
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on the other datasets ({run.listed(others)}), {lora.name} (epoch {lora.last_epoch}) "
                   f"vs {projector.name} (epoch {projector.last_epoch})", f"{projector.name} - {lora.name}")
    return _claim_dict("projector-retains-more", check, arms, _per_dataset_details(run, lo, pr, others),
                       compared=[lora.last_epoch, projector.last_epoch])


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


# ------------------------------------------------------------------------------------------------- writing


def write_emt_report(run_dir: str | Path) -> ReportFiles:
    """Summarise the run folder and write ``metrics.json``, ``report.html``, ``report.md`` and ``plots/``."""
    from .emt_page import build_emt_report
    from .document import write_report

    run_dir = Path(run_dir)
    summary = summarise_emt(run_dir)
    atomic_write_json(run_dir / "metrics.json", summary)
    files = write_report(build_emt_report(summary), run_dir)
    log.info("EMT report: %s", files.html)
    return files


def is_emt_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return {"train", "methods", "eval"} <= set(config) and (run_dir / "base").is_dir()


REPORTS.register("emt", ReportKind("emt", write_emt_report, is_emt_run, "EMT forgetting curves and claims"),
                 description="EMT study: forgetting curves, hallucination, concentration, claims")
