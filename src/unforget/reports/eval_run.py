"""The report of a plain ``unforget eval`` run folder: its metrics table and one confusion matrix per dataset.

Read from the folder's config.yaml and metrics.json (written by ``unforget eval``); nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import DataError
from ..runs import read_json
from ..stats import wilson_interval
from .base import REPORTS, ReportKind
from .document import (
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
from .plots import BarSeries, bar_chart, confusion_panel, heatmap


def build_eval_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(f"{run_dir} has no metrics.json: the evaluation did not finish; rerun the same "
                        "`unforget eval --out` command to complete it")
    config = read_yaml(run_dir / "config.yaml")
    metrics = read_json(metrics_path)
    datasets: dict[str, Any] = metrics.get("datasets") or {}
    model = (config.get("model") or {}).get("name")
    report = Report(title=f"Evaluation: {model}", facts=[
        ("run folder", str(run_dir)), ("model", str(model)),
        ("datasets", ", ".join(datasets)),
        ("settings", f"{config.get('split')} split, {config.get('mode')} mode, judges {config.get('judges')}, "
                     f"limit {config.get('limit')}"),
        ("git sha", str((metrics.get("run_info") or {}).get("git_sha"))),
    ])
    kinds = sorted({k for d in datasets.values() for k in (d.get("baselines") or {})})
    leak_sets = sorted({k for d in datasets.values() for k in (d.get("leak_rates") or {})})
    rows = []
    for name, d in datasets.items():
        baselines = d.get("baselines") or {}
        rows.append([
            name, str(d.get("n")), format_interval(d.get("accuracy"), d.get("accuracy_low"), d.get("accuracy_high")),
            *[format_interval(baselines[k].get("accuracy"), baselines[k].get("accuracy_low"),
                              baselines[k].get("accuracy_high")) if k in baselines else "-" for k in kinds],
            _rate(d.get("no_class_rate"), d.get("n")),
            *[_rate((d.get("leak_rates") or {}).get(k), d.get("n")) for k in leak_sets],
            format_number(d.get("top1_share")), format_number(d.get("normalised_entropy")),
            str(d.get("unjudged", 0)), str(d.get("skipped", 0)),
        ])
    table = Table(["dataset", "n", "MLLM accuracy", *kinds, "no class", *[f"names {k} labels" for k in leak_sets],
                   "top-1 share", "normalised entropy", "unjudged", "skipped"], rows,
                  "Accuracy and rates with 95% Wilson intervals; baselines are the model's vision encoder as a "
                  "classifier; top-1 share and entropy describe how concentrated the predicted classes are.")
    series = [BarSeries("MLLM", [d.get("accuracy") for d in datasets.values()],
                        [d.get("accuracy_low") for d in datasets.values()],
                        [d.get("accuracy_high") for d in datasets.values()])]
    for kind in kinds:
        found = [(d.get("baselines") or {}).get(kind) or {} for d in datasets.values()]
        series.append(BarSeries(f"{kind} (vision encoder)", [b.get("accuracy") for b in found],
                                [b.get("accuracy_low") for b in found], [b.get("accuracy_high") for b in found]))
    chart = Figure("accuracy", bar_chart(list(datasets), series, title="Accuracy per dataset", ylabel="accuracy",
                                         ylim=(0.0, 1.05)),
                   "Accuracy with 95% Wilson intervals.")
    report.sections.append(Section("Accuracy", [table, chart] if datasets else [table]))
    figures: list[Any] = []
    for name, d in datasets.items():
        confusion = d.get("confusion") or {}
        if not confusion:
            continue
        figures.append(Figure(figure_name(f"confusion-{name}"),
                              heatmap([confusion_panel(confusion, list(d.get("per_class") or confusion), name)],
                                      title=f"{name}: confusion matrix", colorbar_label="share of the true class"),
                              f"{name}: rows are true classes, columns the class the answer named (<none>: no "
                              "class); cells count samples, colour is the row share."))
    report.sections.append(Section("Confusion matrices", figures or [Paragraph("No classification dataset.")]))
    return report


def _rate(rate: float | None, n: int | None) -> str:
    """A share of ``n`` answers with its Wilson interval (metrics.json stores the share alone)."""
    if rate is None or not n:
        return format_number(rate)
    est = wilson_interval(round(rate * n), int(n))
    return format_interval(est.value, est.low, est.high)


def write_eval_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ for an eval run folder (its metrics.json stays as written)."""
    return write_report(build_eval_report(run_dir), run_dir)


def is_eval_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "datasets" in config and "mode" in config and "train" not in config


REPORTS.register("eval", ReportKind("eval", write_eval_report, is_eval_run, "an `unforget eval` run"),
                 description="eval run: metrics table and confusion matrices")
