"""The Model Tailor study's page: its summary rendered as a :class:`unforget.reports.document.Report` (headline
verdicts, per group a table and the retention-vs-reach and sparsity plots, the fine-tuned models, the cost)."""

from __future__ import annotations

from typing import Any

from ...reports.document import (
    claim_test_text,
    preconditions_section,
    BulletList,
    Claim,
    ClaimList,
    Figure,
    Paragraph,
    Report,
    Section,
    Table,
    figure_name,
    format_interval,
    format_number,
)
from ...reports.names import named_refs
from ...reports.plots import LinePanel, ReferenceLine, Series, line_plot
from ...stats import Estimate, json_float
from .config import MULTI, HeadlineCheck
from .summary import GroupSummary, RunSummary, ScoreEstimate, TailorSummary


def _pct(estimate: Estimate | None) -> str:
    value = json_float(estimate.value) if estimate is not None else None
    if estimate is None or value is None:
        return "-"
    low, high = json_float(estimate.low), json_float(estimate.high)
    text = f"{100 * value:.1f}%"
    if low is None or high is None:
        return text
    return f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def _value(estimate: Estimate | None, key: str = "value") -> float | None:
    value = json_float(getattr(estimate, key)) if estimate is not None else None
    return None if value is None else 100.0 * value


def _score(score: ScoreEstimate | None) -> str:
    return "-" if score is None else format_interval(score.estimate.value, score.estimate.low, score.estimate.high)


def _sparsity_label(row: RunSummary) -> str:
    return f"{100 * row.sparsity:g}%" if row.sparsity is not None else "-"


def _headline(summary: TailorSummary) -> HeadlineCheck:
    return summary.headline or HeadlineCheck()


def _group_title(group: str, summary: TailorSummary) -> str:
    if group == MULTI:
        return "All targets at once: " + ", ".join(summary.groups[group].targets)
    return f"Target {group} ({summary.names[summary.targets[group]]})"


def _by_name(runs: list[RunSummary]) -> dict[str, list[RunSummary]]:
    by_name: dict[str, list[RunSummary]] = {}
    for row in runs:
        by_name.setdefault(row.name, []).append(row)
    return by_name


def _tradeoff_figure(group: str, data: GroupSummary, summary: TailorSummary) -> Figure | Paragraph:
    """Retention on the original tasks against reach on the target(s), one line per method over the sweep."""
    series = []
    for name, rows in _by_name(data.runs).items():
        # a point needs its x: runs whose reach is undefined (fine-tuned model scores 0) are left out
        rows = sorted((r for r in rows if _value(r.reach.pooled) is not None), key=lambda r: r.sparsity or 0.0)
        if not rows:
            continue
        series.append(Series(name, [_value(r.reach.pooled) for r in rows],
                             [_value(r.retention.pooled) for r in rows],
                             [_value(r.retention.pooled, "low") for r in rows],
                             [_value(r.retention.pooled, "high") for r in rows],
                             linestyle="-" if len(rows) > 1 else "none", marker="o" if len(rows) > 1 else "s"))
    targets = data.targets
    ft_retention = [summary.finetuned[t].retention.pooled for t in targets]
    if len(targets) == 1 and ft_retention[0] is not None:
        series.append(Series("fine-tuned", [100.0], [_value(ft_retention[0])], [_value(ft_retention[0], "low")],
                             [_value(ft_retention[0], "high")], linestyle="none", marker="*"))
    base_reach = data.base_reach.pooled
    if base_reach is not None:
        series.append(Series("base", [_value(base_reach)], [100.0], linestyle="none", marker="D"))
    if not any(s.label not in ("fine-tuned", "base") for s in series):
        return Paragraph("No retention-vs-reach plot: the fine-tuned model scores 0 on the target, so no tailored "
                         "model's share of it is defined.")
    keep = float(_headline(summary).keep)
    refs = [ReferenceLine(f"keep {100 * keep:g}%", 100 * keep)]
    panel = LinePanel(_group_title(group, summary), series, refs, ylabel="original tasks, % of base",
                      xlabel="target task" + ("s" if group == MULTI else "") + ", % of fine-tuned")
    png = line_plot([panel], title="Retention vs reach", dodge=0.0)
    return Figure(figure_name(f"tradeoff-{group}"), png,
                  "Each point is one tailored model: x = target score as a share of the fine-tuned model, y = "
                  "original-task score as a share of the base model (pooled over the original datasets), with its "
                  f"{100 * summary.confidence:.0f}% paired bootstrap interval. Lines join one method's sparsities "
                  "(more grafted weights: further right). The paper's target: top right, above the dashed line.")


def _sparsity_figure(group: str, data: GroupSummary, summary: TailorSummary) -> Figure:
    panels = []
    for key, title, ylabel in (("retention", "Original tasks", "% of base"), ("reach", "Target", "% of fine-tuned")):
        series = []
        for name, rows in _by_name(data.runs).items():
            rows = sorted((r for r in rows if r.changed_fraction is not None), key=lambda r: r.changed_fraction or 0.0)
            if not rows:
                continue
            shares = [getattr(r, key).pooled for r in rows]
            series.append(Series(name, [100 * (r.changed_fraction or 0.0) for r in rows],
                                 [_value(e) for e in shares], [_value(e, "low") for e in shares],
                                 [_value(e, "high") for e in shares], linestyle="-" if len(rows) > 1 else "none"))
        panels.append(LinePanel(title, series, [ReferenceLine("100%", 100.0)], ylabel=ylabel,
                                xlabel="changed weights, % of the considered ones"))
    return Figure(figure_name(f"sparsity-{group}"), line_plot(panels, title=_group_title(group, summary), dodge=0.0),
                  "Both shares against the fraction of the considered weights the method changed (grafting methods: "
                  "the sparsity; merges: all entries their task vectors touch).")


def _group_table(data: GroupSummary, summary: TailorSummary) -> Table:
    targets = data.targets
    target_sets = [summary.targets[t] for t in targets]
    datasets = [*summary.original, *target_sets]
    names = summary.names
    columns = ["model", "sparsity", "changed", "original tasks (% of base)", "target (% of fine-tuned)",
               *[names[d] for d in datasets]]
    rows = [["base", "-", "0%", "100%", _pct(data.base_reach.pooled),
             *[_score(summary.base.scores.get(d)) for d in datasets]]]
    for t in targets:
        ft = summary.finetuned[t]
        rows.append([f"fine-tuned ({t})", "-", "100%", _pct(ft.retention.pooled),
                     "100%" if len(targets) == 1 else f"{t}: 100%",
                     *[_score(ft.scores.get(d)) for d in summary.original],
                     *[_score(ft.scores.get(d)) if d == summary.targets[t] else "-" for d in target_sets]])
    for row in data.runs:
        rows.append([row.name + ("" if row.done else " (unfinished)"), _sparsity_label(row),
                     f"{100 * row.changed_fraction:.2f}%" if row.changed_fraction is not None else "-",
                     _pct(row.retention.pooled), _pct(row.reach.pooled),
                     *[_score(row.scores.get(d)) for d in datasets]])
    return Table(columns, rows, "Shares with paired bootstrap intervals; per-dataset scores are accuracy (Wilson "
                                "interval) or CIDEr-D (bootstrap interval) for caption sets.")


def _cost_table(summary: TailorSummary) -> Table:
    stages = ["calibrate", "score", "mask", "compensate", "merge", "write"]
    rows = []
    for group, data in summary.groups.items():
        for row in data.runs:
            seconds = row.seconds or {}
            rows.append([group, row.folder, *[format_number(seconds.get(s), 2) for s in stages]])
    return Table(["group", "run", *[f"{s} (s)" for s in stages]], rows,
                 "Wall-clock seconds per stage of each tailoring run (from its tailor.json).")


def build_tailor_report(summary: TailorSummary) -> Report:
    refs = [*summary.original, *summary.targets.values()]
    names = summary.names
    report = Report(title=f"Model Tailor study: {summary.name}", facts=[
        ("run folder", summary.run_dir), ("model", str(summary.model)),
        ("original tasks", ", ".join(names[d] for d in summary.original)),
        ("targets", ", ".join(f"{t} ({names[d]})" for t, d in summary.targets.items())),
        ("sparsities", ", ".join(f"{100 * s:g}%" for s in summary.sparsities or [])),
        ("evaluation", f"{summary.eval.split} split, limit {summary.eval.limit}, {summary.eval.mode} mode"),
    ])
    if any(names[d] != d for d in refs):
        report.facts.insert(4, ("dataset references", named_refs(refs, names)))
    claims = [Claim(c.check.claim, c.check.verdict, c.check.evidence, list(c.details or [])) for c in summary.claims]
    if summary.preconditions.checks:
        report.sections.append(preconditions_section(summary.preconditions.checks))
    report.sections.append(Section("Headline", [
        Paragraph("Model Tailor (arXiv 2402.12048) reports that grafting at most 10% of the fine-tuned weights onto "
                  "the base model keeps about 99% of its original-task performance and reaches about 97% of the "
                  "fine-tuned model's on the target. Verdicts below come from the paired bootstrap intervals of "
                  "those shares at the largest swept sparsity within the bound."),
        Table(["group", "claim", "verdict", "test"],
              [[c.group, c.id, c.check.verdict, claim_test_text(c.check)] for c in summary.claims],
              "At a glance; the sentences below give the numbers behind each verdict."),
        ClaimList(claims)]))
    for group, data in summary.groups.items():
        blocks: list[Any] = [_group_table(data, summary), _tradeoff_figure(group, data, summary),
                             _sparsity_figure(group, data, summary)]
        notes = sorted({n for row in data.runs for n in row.retention.notes + row.reach.notes})
        if notes:
            blocks.append(BulletList(notes))
        report.sections.append(Section(_group_title(group, summary), blocks))
    ft_rows = [[t, _pct(ft.retention.pooled), _pct(ft.gain_over_base)] for t, ft in summary.finetuned.items()]
    report.sections.append(Section("Fine-tuned models", [Table(
        ["target", "original tasks (% of base)", "target (% of base)"], ft_rows,
        "What fine-tuning did before any tailoring: forgetting on the original tasks, gain on the target.")]))
    report.sections.append(Section("Cost", [_cost_table(summary)]))
    if summary.missing_runs:
        report.sections.append(Section("Unfinished", [BulletList(summary.missing_runs)]))
    return report


__all__ = ["build_tailor_report"]
