"""The continual study's page: its summary (:class:`.summary.ContinualSummary`) rendered as a
:class:`unforget.reports.document.Report` (claims, metrics, accuracy matrices, accuracy over time, forgetting per
task, the probe, the training steps)."""

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
    format_estimate,
    format_number,
)
from ...reports.plots import BarSeries, HeatmapPanel, LinePanel, Series, bar_chart, colour_map, heatmap, line_plot
from ...reports.probe import correlation_sentence, scatter_panel
from ...stats import Estimate, json_float
from .summary import ContinualSummary, StrategySummary

SHARE_RANGE = (-0.03, 1.03)
METRICS = (  # (field of ContinualEstimates, column title)
    ("final_average_accuracy", "ACC"),
    ("average_accuracy_over_time", "mean accuracy over time"),
    ("backward_transfer", "BWT"),
    ("forward_transfer", "FWT"),
    ("average_forgetting", "forgetting"),
)


def _shown(e: Estimate | None) -> str:
    """``value [low, high]``, or "-"."""
    return format_estimate(e.to_dict() if e is not None else None)


def _part(e: Estimate | None, part: str = "value") -> float | None:
    """One number of an estimate as metrics.json holds it (None: missing or not finite)."""
    return json_float(getattr(e, part)) if e is not None else None


def build_continual_report(summary: ContinualSummary) -> Report:
    colours = colour_map([s.name for s in summary.strategies])
    report = Report(title=f"Continual study: {summary.name}", facts=_facts(summary))
    if summary.preconditions.checks:
        report.sections.append(preconditions_section(summary.preconditions.checks))
    report.sections.append(_claims_section(summary))
    report.sections.append(_metrics_section(summary, colours))
    report.sections.append(_matrix_section(summary))
    report.sections.append(_over_time_section(summary, colours))
    report.sections.append(_forgetting_section(summary))
    if summary.probe is not None:
        report.sections.append(_probe_section(summary, colours))
    report.sections.append(_training_section(summary))
    if summary.notes:
        report.sections.append(Section("Notes", [BulletList(list(summary.notes))]))
    return report


def _task_labels(summary: ContinualSummary) -> list[str]:
    return [t.label or t.ref for t in summary.tasks]


def _facts(summary: ContinualSummary) -> list[tuple[str, str]]:
    ev, train = summary.eval, summary.train
    # a label that shortens its reference (a path's last folder) is spelled out once
    aliases = [f"{t.label} = {t.ref}" for t in summary.tasks if t.label and t.label != t.ref]
    return [
        ("run folder", summary.run_dir),
        ("model", str(summary.model)),
        ("tasks, in training order", " -> ".join(_task_labels(summary))),
        *([("task references", ", ".join(aliases))] if aliases else []),
        ("strategies", ", ".join(f"{s.name} ({s.strategy})" for s in summary.strategies)),
        ("fine-tuning", f"{train.method} {train.method_options or ''}, lr {train.lr or 'default'}"
                        f", {train.epochs} epoch(s), {train.limit} training samples per task "
                        f"({train.sampling} sampling)"),
        ("evaluated on", f"every task's {ev.split} split after every task ({ev.mode} mode, limit "
                         f"{ev.limit}, judges {ev.judges})"),
        ("significance", f"alpha = {summary.alpha:g}; intervals at {summary.confidence:.0%}; "
                         f"{summary.n_resamples} bootstrap resamples"),
        ("status", "complete" if summary.complete else "incomplete (see the notes at the end)"),
    ]


def _claims_section(summary: ContinualSummary) -> Section:
    intro = Paragraph(
        "The paper's claim: regularised (few parameters, low learning rate) and data-hybrid (replay) training forget "
        "less than naive sequential fine-tuning. Checked for every strategy against naive on the earlier tasks' test "
        "samples, paired: per sample, forgetting = correct after its own task - correct after the last task; the "
        f"strategies' means are compared with a one-sided paired bootstrap test at alpha = {summary.alpha:g} (the "
        "claim has a direction). 'held': significantly lower forgetting; 'not held': significantly higher; 'not "
        "shown': neither. Marked "
        "(paper) where the strategy is one the paper's claim is about.")
    blocks: list[Any] = [intro]
    if not summary.claims:
        blocks.append(Paragraph("No strategy to compare with naive fine-tuning."))
        return Section("Claims", blocks)
    rows = []
    for c in summary.claims:
        test = c.check.test
        rows.append([c.arm + (" (paper)" if c.paper_claim else ""), c.check.verdict,
                     f"{test.delta_of} = {_shown(test.delta)}" if test is not None else "-",
                     claim_test_text(c.check) if test is not None else "-"])
    blocks.append(Table(["strategy", "verdict", "forgetting difference [interval]", "test"], rows,
                        "Negative differences: the strategy forgets less than naive."))
    blocks.append(ClaimList([Claim(c.check.claim, c.check.verdict, c.check.evidence, list(c.details))
                             for c in summary.claims]))
    return Section("Claims", blocks)


def _metrics_section(summary: ContinualSummary, colours: dict[str, str]) -> Section:
    blocks: list[Any] = [Paragraph(
        "From the accuracy matrix R[i][j] (accuracy on task j after training task i; T tasks) and the base model's "
        "accuracies b[j]: ACC = mean_j R[T-1][j]; mean accuracy over time = mean_i of the average accuracy on the "
        "tasks seen after step i; BWT = mean_{j<T-1} (R[T-1][j] - R[j][j]) (negative: forgetting); FWT = "
        "mean_{j>0} (R[j-1][j] - b[j]); forgetting = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j]). Intervals: "
        "percentile bootstrap over each task's test samples, the same samples at every step.")]
    rows = []
    for s in summary.strategies:
        m = s.metrics
        if m is None:
            rows.append([s.name] + ["-"] * len(METRICS) + ["not finished" if not s.done else "no paired samples"])
            continue
        rows.append([s.name] + [_shown(getattr(m, key)) for key, _ in METRICS]
                    + [", ".join(str(n) for n in s.aligned_samples or [])])
    blocks.append(Table(["strategy", *(title for _, title in METRICS), "samples per task"], rows,
                        "Each value with its interval; samples per task: those judged in every evaluation."))
    finished = [s for s in summary.strategies if s.metrics is not None]
    if finished:
        series = []
        for key, title in (("final_average_accuracy", "ACC"), ("average_forgetting", "forgetting")):
            estimates = [getattr(s.metrics, key) for s in finished]
            series.append(BarSeries(title, [_part(e) for e in estimates], [_part(e, "low") for e in estimates],
                                    [_part(e, "high") for e in estimates]))
        png = bar_chart([s.name for s in finished], series, title="Final average accuracy and forgetting",
                        ylabel="accuracy")
        blocks.append(Figure("continual-metrics", png, "ACC (higher is better) and average forgetting (lower is "
                                                       "better) per strategy, with bootstrap intervals."))
    return Section("Continual metrics", blocks)


def _matrix_rows(summary: ContinualSummary, strategy: StrategySummary) -> tuple[list[str], list[list[Estimate | None]]]:
    labels = _task_labels(summary)
    rows = ["base"] + [f"after {t}" for t in labels]
    cells = [list(summary.base_accuracy)] + [list(row) for row in strategy.accuracy_matrix]
    return rows, cells


def _matrix_section(summary: ContinualSummary) -> Section:
    labels = _task_labels(summary)
    blocks: list[Any] = [Paragraph(
        "Rows: the model after each task (the first row: the base model); columns: the task evaluated. The "
        "diagonal is each task just after training it; below it, earlier tasks (forgetting shows as a fall down a "
        "column); above it, tasks not trained yet (forward transfer).")]
    strategies = summary.strategies
    if strategies:
        panels = []
        for s in strategies:
            rows, cells = _matrix_rows(summary, s)
            panels.append(HeatmapPanel(s.name, [[_part(c) for c in row] for row in cells], rows, labels,
                                       xlabel="evaluated task"))
        png = heatmap(panels, title="Accuracy matrix R[i][j]", colorbar_label="accuracy", ncols=min(3, len(panels)))
        blocks.append(Figure("accuracy-matrices", png, "R per strategy, with the base model's accuracies on top."))
    for s in strategies:
        rows, cells = _matrix_rows(summary, s)
        blocks.append(Table(["model", *labels], [[r, *(_shown(c) for c in row)] for r, row in zip(rows, cells)],
                            f"{s.name}: accuracy with Wilson intervals ('-': not evaluated yet)."))
    return Section("Accuracy matrices", blocks)


def _over_time_section(summary: ContinualSummary, colours: dict[str, str]) -> Section:
    labels = _task_labels(summary)
    steps = list(range(len(labels) + 1))
    panels = []
    for j, task in enumerate(labels):
        series = []
        for s in summary.strategies:
            cells = [summary.base_accuracy[j]] + [row[j] for row in s.accuracy_matrix]
            series.append(Series(s.name, steps, [_part(c) for c in cells], [_part(c, "low") for c in cells],
                                 [_part(c, "high") for c in cells]))
        panels.append(LinePanel(f"{task} (trained at step {j + 1})", series, ylabel="accuracy",
                                xlabel="tasks trained (0: base)", ylim=SHARE_RANGE, integer_x=True))
    blocks: list[Any] = [Paragraph("Accuracy on each task as the sequence goes on, with Wilson intervals.")]
    if panels and summary.strategies:
        blocks.append(Figure("accuracy-over-time", line_plot(panels, title="Accuracy on each task over time",
                                                             colours=colours),
                             "x = number of tasks trained so far; the task's own training step is in its title."))
    return Section("Accuracy over time", blocks)


def _forgetting_section(summary: ContinualSummary) -> Section:
    labels = _task_labels(summary)[:-1]
    if not labels:
        return Section("Forgetting per task", [Paragraph("One task only: nothing can be forgotten.")])
    rows = []
    for s in summary.strategies:
        per_task = s.metrics.forgetting_per_task if s.metrics is not None else ()
        rows.append([s.name, *(_shown(e) for e in per_task)] if per_task else [s.name] + ["-"] * len(labels))
    return Section("Forgetting per task", [Table(["strategy", *labels], rows,
                                                 "max over earlier steps of R[l][j] - R[T-1][j], with bootstrap "
                                                 "intervals (the last task has none).")])


def _probe_section(summary: ContinualSummary, colours: dict[str, str]) -> Section:
    """The judge-free probe after every step: KL from the base model, and how it ranks the measured forgetting."""
    probe = summary.probe
    assert probe is not None  # the section is built only for a summary with a probe
    labels = _task_labels(summary)
    sentences = [
        correlation_sentence(probe.correlation_forgetting, "the probe's KL on the earlier tasks and their "
                                                           "forgetting (correct after their own step - correct now)",
                             "(strategy, step)"),
        correlation_sentence(probe.correlation_drop_from_base, "the probe's KL on the earlier tasks and their "
                                                               "accuracy drop from the base model", "(strategy, step)"),
    ]
    kl_panel = LinePanel("KL on all tasks", [], ylabel="KL(base || current), nats", xlabel="tasks trained (0: base)",
                         integer_x=True)
    for name, curve in probe.curves.items():
        if curve:
            kl_panel.series.append(Series(name, [0] + [p.step + 1 for p in curve], [0.0] + [p.kl for p in curve]))
    points = [p.to_dict() for p in probe.points]
    panels = [kl_panel,
              scatter_panel("KL vs forgetting (earlier tasks)", points, "kl_earlier", "forgetting", "strategy",
                            ylabel="forgetting (own step - now)"),
              scatter_panel("KL vs drop from base (earlier tasks)", points, "kl_earlier", "drop_from_base",
                            "strategy", ylabel="base - now accuracy")]
    panels = [p for p in panels if p.series]
    blocks: list[Any] = [BulletList(sentences)]
    if panels:
        blocks.append(Figure("probe", line_plot(panels, title="Judge-free forgetting probe", colours=colours,
                                                ncols=len(panels)),
                             "KL(base || current) of the next-token distribution at the answer position, mean over "
                             "the probe samples (no generation, no judge). Left: all tasks, after each step. Middle "
                             "and right: each step's KL on the tasks trained before it against the forgetting "
                             "measured on them (paired per sample)."))
    rows = [[p.strategy, labels[p.step], format_number(p.kl_earlier), format_number(p.forgetting),
             format_number(p.drop_from_base), str(p.n)] for p in probe.points]
    blocks.append(Table(["strategy", "after task", "KL (earlier tasks)", "forgetting", "drop from base", "paired n"],
                        rows, "Per step with at least one earlier task; forgetting and drop are means over the "
                              "earlier tasks' samples judged in both evaluations."))
    return Section("Judge-free forgetting probe", blocks)


def _training_section(summary: ContinualSummary) -> Section:
    labels = _task_labels(summary)
    rows = []
    for s in summary.strategies:
        for step in s.steps:
            params, total = step.trainable_parameters, step.total_parameters
            rows.append([s.name, labels[step.index], str(step.method or "-"),
                         format_number(step.lr, 6) if step.lr else "-",
                         str(step.regularizer or "-"),
                         f"{params:,} of {total:,}" if params is not None and total else "-",
                         str(step.optimizer_steps if step.optimizer_steps is not None else "-"),
                         format_number(step.final_loss, 4),
                         format_number(step.changed_fraction, 4),
                         format_number(step.seconds, 1), "yes" if step.done else "no"])
    return Section("Training", [Table(
        ["strategy", "task", "method", "lr", "regularizer", "trainable parameters", "steps", "final loss",
         "grafted fraction", "seconds", "done"], rows,
        "Per step; the final loss includes the regularizer's penalty; grafted fraction: model-tailor's patch size "
        "over the considered entries.")])
