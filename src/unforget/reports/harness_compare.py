"""The report of a harness comparison folder (``unforget compare-logs``): a base and a fine-tuned model's per-sample
outputs from lmms-eval or VLMEvalKit, paired by document id.

Inputs: ``metrics.json`` (per task and metric: the base and fine-tuned scores with their intervals, the forgetting
``base - fine-tuned`` with its interval and paired test, the Wilcoxon p for continuous scores, the unmatched and
unscored documents; the tasks logged on one side only; the metrics that have no per-sample score). Nothing is
recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from ..runs import METRICS, read_json, read_manifest
from .base import REPORTS, ReportKind
from .document import (
    BulletList,
    Figure,
    Paragraph,
    Report,
    ReportFiles,
    Section,
    Table,
    format_estimate,
    write_report,
)
from .plots import BarSeries, ReferenceLine, bar_chart

KIND = "harness-compare"  # the run.json kind unforget.evaluation.harness_logs writes
TEST_NAMES = {"mcnemar_exact": "exact McNemar", "paired_bootstrap": "paired bootstrap"}


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 1e-3 else f"{value:.3f}"


def build_harness_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise DataError(f"{run_dir} has no {METRICS}: the comparison did not finish; rerun `unforget compare-logs`")
    doc = read_json(run_dir / METRICS)
    config = doc.get("config") or {}
    tasks: list[dict[str, Any]] = doc.get("tasks") or []
    level = f"{1 - float(doc.get('alpha', 0.05)):.0%}"
    manifest = read_manifest(run_dir)
    sha = (doc.get("run_info") or {}).get("git_sha") or (manifest.git_sha if manifest is not None else None)
    report = Report(title="Forgetting from harness logs", facts=[
        ("run folder", str(run_dir)), ("base model logs", str(config.get("base"))),
        ("fine-tuned model logs", str(config.get("finetuned"))),
        ("harness", ", ".join(doc.get("harnesses") or []) or "-"),
        ("metric", str(config.get("metric") or "every per-sample metric")), ("git sha", str(sha)),
    ])
    labels = [f"{t['task']} ({t['metric']})" for t in tasks]
    rows = []
    for label, t in zip(labels, tasks):
        f = t["forgetting"]
        rows.append([label, t["scale"], str(t["n"]), format_estimate(t["base"]), format_estimate(t["finetuned"]),
                     format_estimate(f["delta"]), TEST_NAMES.get(f["test"], f["test"]), _p(f["p_value"]),
                     _p(t.get("wilcoxon_p")), "yes" if f["significant"] else "no",
                     f"{t['unmatched']['base_only']} / {t['unmatched']['finetuned_only']}",
                     f"{t['unscored']['base']} / {t['unscored']['finetuned']}"])
    table = Table(["task (metric)", "scale", "n paired", "base", "fine-tuned", "forgetting (base - fine-tuned)",
                   "test", "p", "Wilcoxon p", "significant", "unmatched (base / fine-tuned only)",
                   "unscored (base / fine-tuned)"], rows,
                  f"Mean score on the documents both models were scored on, with {level} intervals (Wilson for 0/1 "
                  "scores, percentile bootstrap otherwise); forgetting is base minus fine-tuned (positive: the "
                  "fine-tuned model lost), tested by exact McNemar (0/1 scores) or paired bootstrap, and for "
                  "continuous scores also by the Wilcoxon signed-rank test.")
    blocks: list[Any] = [table]
    if tasks:
        deltas = [t["forgetting"]["delta"] for t in tasks]
        chart = bar_chart(labels, [BarSeries("forgetting", [d.get("value") for d in deltas],
                                             [d.get("low") for d in deltas], [d.get("high") for d in deltas])],
                          title="Forgetting per task (base - fine-tuned)", ylabel="forgetting",
                          reference_lines=[ReferenceLine("no change", 0.0)])
        blocks.append(Figure("forgetting", chart, f"Forgetting per task with {level} intervals; above 0: the "
                                                  "fine-tuned model scores lower."))
    report.sections.append(Section("Forgetting per task", blocks))
    report.sections.append(Section("Unmatched documents and tasks", _unmatched_blocks(doc, tasks, labels)))
    return report


def _unmatched_blocks(doc: dict[str, Any], tasks: list[dict[str, Any]], labels: list[str]) -> list[Any]:
    items = []
    for label, t in zip(labels, tasks):
        u = t["unmatched"]
        for side, count, ids in (("base", u["base_only"], u["base_only_ids"]),
                                 ("fine-tuned", u["finetuned_only"], u["finetuned_only_ids"])):
            if count:
                more = f" (first {len(ids)} listed)" if count > len(ids) else ""
                items.append(f"{label}: {count} document(s) only in the {side} logs{more}: {', '.join(ids)}")
        for side, count in (("base", t["unscored"]["base"]), ("fine-tuned", t["unscored"]["finetuned"])):
            if count:
                items.append(f"{label}: {count} document(s) without a score in the {side} logs")
    unmatched = doc.get("unmatched_tasks") or {}
    for side, key in (("base", "base_only"), ("fine-tuned", "finetuned_only")):
        if unmatched.get(key):
            items.append(f"tasks logged by the {side} model only: {', '.join(unmatched[key])}")
    for s in doc.get("skipped_metrics") or []:
        items.append(f"{s['task']}: metric '{s['metric']}' skipped: {s['reason']}")
    if not items:
        return [Paragraph("Every document and task was logged and scored for both models.")]
    return [Paragraph("Left out of the paired figures above (counted, not dropped silently):"), BulletList(items)]


def write_harness_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ into a `unforget compare-logs` folder."""
    return write_report(build_harness_report(run_dir), run_dir)


def is_harness_comparison(run_dir: Path, config: dict[str, Any]) -> bool:
    """A comparison folder has no config.yaml; its metrics.json has the tasks and the two log paths."""
    if config or not (run_dir / METRICS).is_file():
        return False
    doc = read_json(run_dir / METRICS)
    return isinstance(doc, dict) and "unmatched_tasks" in doc and "tasks" in doc


REPORTS.register(ReportKind(KIND, write_harness_report, is_harness_comparison,
                            "harness comparison: forgetting per task from lmms-eval / VLMEvalKit per-sample logs"))
