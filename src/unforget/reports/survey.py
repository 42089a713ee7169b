"""The survey report: per model and dataset, the MLLM's accuracy against its own vision encoder's (zero-shot where
it has a text side, linear probe always). Built from the survey folder's metrics.json and config.yaml only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import DataError
from ..runs import read_json
from .base import REPORTS, ReportKind
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
    write_report,
)
from .names import display_names, named_refs
from .plots import BarSeries, bar_chart

KINDS = (("mllm", "MLLM"), ("zero-shot", "encoder zero-shot"), ("linear-probe", "encoder linear probe"))


def _cell(row: dict[str, Any], kind: str) -> str:
    e = row.get(kind)
    if not e or e.get("accuracy") is None:
        return "-"
    return format_interval(e["accuracy"], e.get("low"), e.get("high"))


def _gap_sentence(rows: list[dict[str, Any]]) -> list[str]:
    """One line per model: on how many datasets the MLLM is below its linear probe, and the mean gap."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        pairs = [(r["mllm"]["accuracy"], r["linear-probe"]["accuracy"]) for r in rows
                 if r["model"] == model and r.get("linear-probe") and r["mllm"].get("accuracy") is not None]
        if not pairs:
            continue
        below = sum(m < p for m, p in pairs)
        gap = sum(p - m for m, p in pairs) / len(pairs)
        out.append(f"{model}: the MLLM is below its own vision encoder's linear probe on {below} of {len(pairs)} "
                   f"datasets (mean gap {gap:+.3f} accuracy).")
    return out


def build_survey_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise DataError(f"{run_dir} has no metrics.json: the survey did not finish; rerun the same `unforget study "
                        "survey` command to complete it")
    config = read_yaml(run_dir / "config.yaml")
    table = read_json(run_dir / "metrics.json")
    rows: list[dict[str, Any]] = table.get("rows") or []
    settings = config.get("eval") or {}
    names = display_names([*(table.get("datasets") or []), *(str(r["dataset"]) for r in rows)])
    report = Report(title=f"EMT survey: {config.get('name', 'survey')}", facts=[
        ("run folder", str(run_dir)), ("models", ", ".join(table.get("models") or [])),
        ("datasets", named_refs(table.get("datasets") or [], names)),
        ("settings", f"{settings.get('split')} split, {settings.get('mode')} mode, limit {settings.get('limit')}, "
                     f"linear probe on {settings.get('probe_train_limit')} train images"),
    ])
    section = Section("MLLM vs its vision encoder", [Paragraph(
        "EMT's first experiment: each MLLM used as an image classifier (its answer to the dataset's prompt) next "
        "to its own vision encoder as a classifier - zero-shot against the class names where the encoder has a "
        "text side, and a logistic-regression linear probe on the frozen features it feeds the projector. Wilson "
        "95% intervals. An MLLM below its encoder has not kept what its encoder sees.")])
    section.blocks.append(Table(
        ["model", "dataset", "n", *[label for _, label in KINDS]],
        [[r["model"], names[str(r["dataset"])], str(r.get("n", "")), *[_cell(r, k) for k, _ in KINDS]] for r in rows],
        caption="accuracy [95% interval]; '-': not available (no text side for zero-shot, or not a "
                "classification set)"))
    gaps = _gap_sentence(rows)
    if gaps:
        section.blocks.append(BulletList(gaps))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        series = []
        for kind, label in KINDS:
            if not any(r.get(kind) and r[kind].get("accuracy") is not None for r in mine):
                continue
            series.append(BarSeries(label, [(r.get(kind) or {}).get("accuracy") for r in mine],
                                    [(r.get(kind) or {}).get("low") for r in mine],
                                    [(r.get(kind) or {}).get("high") for r in mine]))
        if series:
            png = bar_chart([names[str(r["dataset"])] for r in mine], series,
                            title=f"{model}: MLLM vs its vision encoder",
                            ylabel="accuracy", ylim=(0.0, 1.05))
            section.blocks.append(Figure(figure_name(f"survey-{model}"), png,
                                         caption=f"{model}: accuracy per dataset, MLLM and encoder baselines"))
    report.sections.append(section)
    return report


def write_survey_report(run_dir: str | Path) -> ReportFiles:
    return write_report(build_survey_report(run_dir), run_dir)


def is_survey_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "models" in config and "datasets" in config and "eval" in config and "train" not in config


REPORTS.register("survey", ReportKind("survey", write_survey_report, is_survey_run, "an EMT survey run"),
                 description="survey: MLLM vs vision-encoder accuracy table and bar charts")
