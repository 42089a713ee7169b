"""The survey report: per model and dataset, the MLLM's accuracy against its own vision encoder's (zero-shot where
it has a text side, linear probe always). Built from the survey's summary (:class:`.summary.SurveySummary`) alone."""

from __future__ import annotations

from ...reports.document import BulletList, Figure, Paragraph, Report, Section, Table, figure_name, format_interval
from ...reports.names import display_names, named_refs
from ...reports.plots import BarSeries, bar_chart
from .summary import SurveyRow, SurveySummary

KINDS = (("mllm", "MLLM"), ("zero-shot", "encoder zero-shot"), ("linear-probe", "encoder linear probe"))


def _cell(row: SurveyRow, kind: str) -> str:
    e = row.accuracy_of(kind)
    if e is None or e.accuracy is None:
        return "-"
    return format_interval(e.accuracy, e.low, e.high)


def _gap_sentence(rows: list[SurveyRow]) -> list[str]:
    """One line per model: on how many datasets the MLLM is below its linear probe, and the mean gap."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        pairs = [(r.mllm.accuracy, r.baselines["linear-probe"].accuracy) for r in rows
                 if r.model == model and "linear-probe" in r.baselines and r.mllm.accuracy is not None]
        if not pairs:
            continue
        below = sum(m < p for m, p in pairs)  # type: ignore[operator]
        gap = sum(p - m for m, p in pairs) / len(pairs)  # type: ignore[operator]
        out.append(f"{model}: the MLLM is below its own vision encoder's linear probe on {below} of {len(pairs)} "
                   f"datasets (mean gap {gap:+.3f} accuracy).")
    return out


def build_survey_report(summary: SurveySummary) -> Report:
    table = summary.table
    rows = table.rows
    settings = summary.settings
    names = display_names([*table.datasets, *(r.dataset for r in rows)])
    report = Report(title=f"EMT survey: {summary.name}", facts=[
        ("run folder", summary.run_dir), ("models", ", ".join(table.models)),
        ("datasets", named_refs(table.datasets, names)),
        ("settings", f"{settings.split} split, {settings.mode} mode, limit {settings.limit}, "
                     f"linear probe on {settings.probe_train_limit} train images"),
    ])
    section = Section("MLLM vs its vision encoder", [Paragraph(
        "EMT's first experiment: each MLLM used as an image classifier (its answer to the dataset's prompt) next "
        "to its own vision encoder as a classifier - zero-shot against the class names where the encoder has a "
        "text side, and a logistic-regression linear probe on the frozen features it feeds the projector. Wilson "
        "95% intervals. An MLLM below its encoder has not kept what its encoder sees.")])
    section.blocks.append(Table(
        ["model", "dataset", "n", *[label for _, label in KINDS]],
        [[r.model, names[r.dataset], str(r.n), *[_cell(r, k) for k, _ in KINDS]] for r in rows],
        caption="accuracy [95% interval]; '-': not available (no text side for zero-shot, or not a "
                "classification set)"))
    gaps = _gap_sentence(rows)
    if gaps:
        section.blocks.append(BulletList(gaps))
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        series = []
        for kind, label in KINDS:
            found = [r.accuracy_of(kind) for r in mine]
            if not any(e is not None and e.accuracy is not None for e in found):
                continue
            series.append(BarSeries(label, [e.accuracy if e else None for e in found],
                                    [e.low if e else None for e in found], [e.high if e else None for e in found]))
        if series:
            png = bar_chart([names[r.dataset] for r in mine], series, title=f"{model}: MLLM vs its vision encoder",
                            ylabel="accuracy", ylim=(0.0, 1.05))
            section.blocks.append(Figure(figure_name(f"survey-{model}"), png,
                                         caption=f"{model}: accuracy per dataset, MLLM and encoder baselines"))
    report.sections.append(section)
    return report
