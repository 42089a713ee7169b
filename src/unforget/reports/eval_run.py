"""The report of an evaluation folder: its metrics table and one confusion matrix per dataset.

Read from the folder's metrics.json and config.yaml (written by ``unforget eval``); nothing is recomputed. A study's
evaluation sub-run (``base/`` of a study: run.json kind ``eval`` with a parent) has no config.yaml of its own: the
settings then come from the config metrics.json carries, if any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import DataError
from ..runs import CONFIG, METRICS, SAMPLES, read_json, read_jsonl, read_manifest
from ..stats import wilson_interval
from .base import REPORTS, ReportKind, parent_study
from .document import (
    BulletList,
    Figure,
    Paragraph,
    Report,
    ReportFiles,
    Section,
    Table,
    figure_name,
    format_interval,
    format_number,
    write_report,
)
from .finetune import evaluation_blocks, evaluation_points, read_finetune_run, training_dir, training_sections
from .names import display_names, named_refs
from .plots import BarSeries, bar_chart, confusion_panel, heatmap


def evaluated_datasets(metrics: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(per-dataset metrics, which evaluation they are) from the metrics.json shapes unforget writes: an eval run
    and a study's base (``datasets``), a 2x2 or tailor sub-run (``eval.datasets``), an EMT arm (``epochs``: the
    last one)."""
    if metrics.get("datasets"):
        return metrics["datasets"], ""
    if (metrics.get("eval") or {}).get("datasets"):
        return metrics["eval"]["datasets"], ""
    epochs = {int(e): doc for e, doc in (metrics.get("epochs") or {}).items() if (doc or {}).get("datasets")}
    if epochs:
        return epochs[max(epochs)]["datasets"], f" (epoch {max(epochs)}, the last evaluated)"
    return {}, ""


def build_eval_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS
    records = read_jsonl(run_dir / SAMPLES) if (run_dir / SAMPLES).is_file() else []
    if not metrics_path.is_file() and not records:
        raise DataError(f"{run_dir} has no metrics.json: the evaluation did not finish; rerun the same "
                        "`unforget eval --out` command to complete it")
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    config = read_yaml(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else metrics.get("config") or {}
    datasets, which = evaluated_datasets(metrics)
    model = (config.get("model") or {}).get("name")
    manifest = read_manifest(run_dir)
    evaluated = list(datasets) or list(dict.fromkeys(str(r.get("dataset")) for r in records))
    facts = [("run folder", str(run_dir)), *([("model", str(model))] if model else []),
             ("datasets", named_refs(evaluated))]
    if config:
        facts.append(("settings", f"{config.get('split')} split, {config.get('mode')} mode, judges "
                                  f"{config.get('judges')}, limit {config.get('limit')}"
                                  + (f" ({config.get('sampling', 'head')} sampling)" if config.get("limit") else "")))
    study = parent_study(run_dir)
    if study is not None:
        facts.append(("part of", f"the {study[0]} study in {study[1]}"))
    sha = (metrics.get("run_info") or {}).get("git_sha") or (manifest.git_sha if manifest is not None else None)
    facts.append(("git sha", str(sha)))
    report = Report(title=f"Evaluation: {model if model else run_dir.name}", facts=facts)
    kinds = sorted({k for d in datasets.values() for k in (d.get("baselines") or {})})
    leak_sets = sorted({k for d in datasets.values() for k in (d.get("leak_rates") or {})})
    names = display_names([*datasets, *leak_sets])
    rows = []
    for name, d in datasets.items():
        baselines = d.get("baselines") or {}
        rows.append([
            names[name], str(d.get("n")),
            format_interval(d.get("accuracy"), d.get("accuracy_low"), d.get("accuracy_high")),
            *[format_interval(baselines[k].get("accuracy"), baselines[k].get("accuracy_low"),
                              baselines[k].get("accuracy_high")) if k in baselines else "-" for k in kinds],
            _rate(d.get("no_class_rate"), d.get("n")),
            *[_rate((d.get("leak_rates") or {}).get(k), d.get("n")) for k in leak_sets],
            format_number(d.get("top1_share")), format_number(d.get("normalised_entropy")),
            str(d.get("unjudged", 0)), str(d.get("skipped", 0)),
        ])
    table = Table(["dataset", "n", "MLLM accuracy", *kinds, "no class",
                   *[f"names {names[k]} labels" for k in leak_sets], "top-1 share", "normalised entropy",
                   "unjudged", "skipped"], rows,
                  "Accuracy and rates with 95% Wilson intervals; baselines are the model's vision encoder as a "
                  "classifier; top-1 share and entropy describe how concentrated the predicted classes are.")
    series = [BarSeries("MLLM", [d.get("accuracy") for d in datasets.values()],
                        [d.get("accuracy_low") for d in datasets.values()],
                        [d.get("accuracy_high") for d in datasets.values()])]
    for kind in kinds:
        found = [(d.get("baselines") or {}).get(kind) or {} for d in datasets.values()]
        series.append(BarSeries(f"{kind} (vision encoder)", [b.get("accuracy") for b in found],
                                [b.get("accuracy_low") for b in found], [b.get("accuracy_high") for b in found]))
    chart = Figure("accuracy", bar_chart([names[d] for d in datasets], series, title="Accuracy per dataset",
                                         ylabel="accuracy", ylim=(0.0, 1.05)),
                   "Accuracy with 95% Wilson intervals.")
    if datasets:
        report.sections.append(Section("Accuracy" + which, [table, chart]))
        report.sections[-1].blocks += sampling_notes(datasets, names, str(config.get("split") or ""))
    figures: list[Any] = []
    for name, d in datasets.items():
        confusion = d.get("confusion") or {}
        if not confusion:
            continue
        figures.append(Figure(figure_name(f"confusion-{name}"),
                              heatmap([confusion_panel(confusion, list(d.get("per_class") or confusion),
                                                       names[name])],
                                      title=f"{names[name]}: confusion matrix",
                                      colorbar_label="share of the true class"),
                              f"{names[name]}: rows are true classes, columns the class the answer named (<none>: no "
                              "class); cells count samples, colour is the row share."))
    if datasets:
        report.sections.append(Section("Confusion matrices", figures or [Paragraph("No classification dataset.")]))
    # a study's sub-run evaluated after each epoch or step, and the training that led there
    _, points = evaluation_points(records)
    if len({p.point for p in points}) > 1 or not datasets:
        report.sections.append(Section("Every evaluation in this folder",
                                       evaluation_blocks(records, figure="accuracy-per-point")
                                       or [Paragraph("No judged sample yet.")]))
    train_dir = training_dir(run_dir)
    if train_dir is not None and train_dir != run_dir:
        report.sections += training_sections(read_finetune_run(run_dir))
    if not metrics_path.is_file():
        report.sections.append(Section("Notes", [Paragraph(
            "The evaluation has not finished (no metrics.json yet): the figures are what its records hold so far.")]))
    return report


def sampling_sentence(sampling: dict[str, Any], split: str = "") -> str:
    """How a dataset's samples were drawn, from metrics.json's ``sampling``: "50 of 1,797 test samples,
    class-stratified, seed 0"."""
    n, population = sampling.get("n"), sampling.get("population")
    if n is None or population is None:
        return ""
    what = f"{split} samples" if split else "samples"
    if n >= population:
        return f"all {population:,} {what}"
    if sampling.get("strategy") == "head":
        return f"the first {n:,} of {population:,} {what}"
    how = {"class": "class-stratified", "answer": "stratified by reference answer"}.get(
        sampling.get("stratified_by") or "", "uniform")
    return f"{n:,} of {population:,} {what}, {how}, seed {sampling.get('seed')}"


def sampling_notes(datasets: dict[str, Any], names: dict[str, str], split: str) -> list[Any]:
    """One sentence per dataset on the samples evaluated, and a warning where the linear probe never saw some of
    the test classes in training (it cannot predict them, so its accuracy is no fair comparison there)."""
    drawn = [f"{names[name]}: {sampling_sentence(d['sampling'], split)}." for name, d in datasets.items()
             if d.get("sampling")]
    untrained = [f"{names[name]}: the linear probe had no training sample of {', '.join(missing)}, so it can "
                 "never predict them (class-disjoint splits, or a probe_train_limit too small)."
                 for name, d in datasets.items()
                 if (missing := ((d.get("baselines") or {}).get("linear-probe") or {}).get("untrained_classes"))]
    notes: list[Any] = []
    if drawn:
        notes += [Paragraph("Samples evaluated (the same for every model evaluated with this seed):"),
                  BulletList(drawn)]
    if untrained:
        notes += [Paragraph("Warning:"), BulletList(untrained)]
    return notes


def _rate(rate: float | None, n: int | None) -> str:
    """A share of ``n`` answers with its Wilson interval (metrics.json stores the share alone)."""
    if rate is None or not n:
        return format_number(rate)
    est = wilson_interval(round(rate * n), int(n))
    return format_interval(est.value, est.low, est.high)


def write_eval_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ for an evaluation folder (its metrics.json stays as written)."""
    return write_report(build_eval_report(run_dir), run_dir)


def is_eval_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "datasets" in config and "mode" in config and "train" not in config


REPORTS.register(ReportKind("eval", write_eval_report, is_eval_run, "eval run: metrics table and confusion matrices"))
