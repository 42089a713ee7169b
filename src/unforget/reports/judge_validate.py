"""The report of a judge validation run (``unforget judge validate``): each judge against the human verdicts.

Inputs: ``metrics.json`` (written by :func:`unforget.cli.judge.run_judge`: the gold file, its answers per
dataset and, per judge, accuracy with its Wilson interval, Cohen's kappa with its bootstrap interval, false
accepts and rejects, per-dataset accuracy and the disagreements). The folder has no config.yaml: the settings are
in metrics.json's ``config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from ..runs import METRICS, read_json
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
from .names import display_names
from .plots import BarSeries, bar_chart

MAX_DISAGREEMENTS = 30  # per judge on the page (metrics.json keeps what the validation kept)


def _value(estimate: dict[str, Any] | None, key: str = "value") -> float | None:
    return None if not estimate else estimate.get(key)


def build_judge_validation_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise DataError(f"{run_dir} has no {METRICS}: the validation did not finish; rerun `unforget judge validate`")
    doc = read_json(run_dir / METRICS)
    judges: dict[str, Any] = doc.get("judges") or {}
    config = doc.get("config") or {}
    level = f"{float(doc.get('confidence', config.get('confidence', 0.95))):.0%}"
    datasets: dict[str, int] = doc.get("datasets") or {}
    names = display_names([*datasets, *(d for j in judges.values() for d in j.get("by_dataset") or {})])
    report = Report(title=f"Judge validation: {Path(str(doc.get('gold') or config.get('gold'))).name}", facts=[
        ("run folder", str(run_dir)), ("gold file", str(doc.get("gold") or config.get("gold"))),
        ("gold sha256", str(config.get("gold_sha256"))),
        ("answers", f"{doc.get('n')} ({doc.get('human_correct')} correct by the human verdict)"),
        ("datasets", ", ".join(f"{names[d]} ({n})" if names[d] == d else f"{names[d]} = {d} ({n})"
                               for d, n in datasets.items()) or "-"),
        ("judges", ", ".join(config.get("judges") or judges) or "-"),
    ])
    rows = [[name, f"{j.get('judged')} of {j.get('n')}", format_estimate(j.get("accuracy")),
             format_estimate(j.get("kappa")), str(j.get("false_accepts")), str(j.get("false_rejects")),
             str(j.get("unjudged"))] for name, j in judges.items()]
    blocks: list[Any] = [
        Paragraph("Each judge's verdicts against the hand-labelled ones: agreement (accuracy) and Cohen's kappa, "
                  "which discounts the agreement expected by chance. A kappa of '-' is undefined (both raters gave "
                  "one verdict throughout). Answers a judge could not judge are counted apart, never as "
                  "disagreement."),
        Table(["judge", "judged", "accuracy", "kappa", "false accepts", "false rejects", "unjudged"], rows,
              f"{level} intervals: Wilson for accuracy, paired bootstrap for kappa. False accept: the judge says "
              "right where the person says wrong."),
    ]
    if judges:
        labels = list(judges)
        series = [BarSeries("accuracy", [_value(j.get("accuracy")) for j in judges.values()],
                            [_value(j.get("accuracy"), "low") for j in judges.values()],
                            [_value(j.get("accuracy"), "high") for j in judges.values()]),
                  BarSeries("kappa", [_value(j.get("kappa")) for j in judges.values()],
                            [_value(j.get("kappa"), "low") for j in judges.values()],
                            [_value(j.get("kappa"), "high") for j in judges.values()])]
        # kappa runs from -1 (systematic disagreement) to 1: the axis goes below 0 when a bar does
        lowest = min([0.0, *(v for s in series for v in [*s.values, *(s.low or [])] if v is not None)])
        blocks.append(Figure("judges", bar_chart(labels, series, title="Agreement with the human verdicts",
                                                 ylabel="accuracy / kappa", ylim=(lowest - 0.05, 1.05)),
                             f"Accuracy and kappa of each judge with {level} intervals."))
    unavailable = doc.get("unavailable") or {}
    if unavailable:
        blocks.append(BulletList([f"{name}: not available here ({why})" for name, why in unavailable.items()]))
    report.sections.append(Section("Agreement", blocks))
    per_dataset = sorted({d for j in judges.values() for d in j.get("by_dataset") or {}})
    if len(per_dataset) > 1:
        report.sections.append(Section("Per dataset", [Table(
            ["judge", *[names[d] for d in per_dataset]],
            [[name, *[format_estimate((j.get("by_dataset") or {}).get(d)) for d in per_dataset]]
             for name, j in judges.items()], f"Accuracy per dataset with {level} Wilson intervals.")]))
    disagreement_blocks: list[Any] = []
    for name, j in judges.items():
        found = j.get("disagreements") or []
        if not found:
            continue
        disagreement_blocks.append(Table(
            ["id", "dataset", "answer", "reference", "human", "judge", "note"],
            [[str(d.get("id")), names.get(str(d.get("dataset")), str(d.get("dataset"))), str(d.get("answer")),
              str(d.get("reference")), "right" if d.get("human") else "wrong", "right" if d.get("judge") else "wrong",
              str(d.get("note") or "")] for d in found[:MAX_DISAGREEMENTS]],
            f"{name}: answers where it disagrees with the person"
            + (f" (the first {MAX_DISAGREEMENTS} of {len(found)})." if len(found) > MAX_DISAGREEMENTS else ".")))
    if disagreement_blocks:
        report.sections.append(Section("Disagreements", disagreement_blocks))
    return report


def write_judge_validation_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ into a `unforget judge validate` folder."""
    return write_report(build_judge_validation_report(run_dir), run_dir)


def is_judge_validation(run_dir: Path, config: dict[str, Any]) -> bool:
    """A validation folder has no config.yaml; its metrics.json names the gold file and the judges."""
    if config or not (run_dir / METRICS).is_file():
        return False
    doc = read_json(run_dir / METRICS)
    return isinstance(doc, dict) and "gold" in doc and "judges" in doc and "human_correct" in doc


REPORTS.register(ReportKind(
    "judge-validate", write_judge_validation_report, is_judge_validation,
    "judge validation: accuracy and kappa of each judge against human verdicts"))
