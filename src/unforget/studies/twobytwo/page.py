"""The 2x2 report page, built from the :class:`~.summary.TwoByTwoSummary` alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ...reports.document import (
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
    format_estimate,
    format_number,
    format_p,
    claim_test_text,
)
from ...reports.language import LANGUAGE_COLUMNS, language_table_cells
from ...reports.names import display_names
from ...reports.plots import (
    HeatmapPanel,
    LinePanel,
    ReferenceLine,
    ScatterPanel,
    ScatterPoint,
    Series,
    colour_map,
    heatmap,
    line_plot,
    numbered_scatter,
)
from ...reports.probe import correlation_sentence, scatter_panel
from ...stats import Estimate
from .config import CELL_KEYS, CELL_LABELS
from .summary import CellMetrics, LanguageSummary, ProbeSummary, RunPoint, TwoByTwoSummary

SHARE_RANGE = (-0.03, 1.03)
CLAIM_TITLES = {
    "no-ood-image-forgetting": "no forgetting on OOD images",
    "lower-lr-forgets-less": "lower lr forgets less (OOD images)",
    "fewer-parameters-forget-less": "fewer trainable parameters forget less (OOD images)",
    "task-alone-overfits-ood-text": "task alone forgets ID image + OOD text",
    "hybrid-recovers-ood-text": "hybrid data recovers ID image + OOD text",
    "hybrid-keeps-target-gain": "hybrid data keeps the target gain",
}
# the 2x2 layout: rows are images, columns are texts
GRID_ROWS = ("ID image", "OOD image")
GRID_COLS = ("ID text", "OOD text")
GRID_CELLS = (("id_image_id_text", "id_image_ood_text"), ("ood_image_id_text", "ood_image_ood_text"))


def build_twobytwo_report(summary: TwoByTwoSummary) -> Report:
    report = Report(title=f"2x2 study: {summary.name}", facts=_facts(summary))
    if summary.preconditions.checks:
        report.sections.append(preconditions_section(summary.preconditions.checks))
    report.sections.append(_claims_section(summary))
    report.sections.append(_grids_section(summary))
    sweep = [r for r in summary.runs if r.kind == "sweep"]
    if sweep:
        report.sections.append(_sweep_section(summary, sweep))
    if summary.runs:
        report.sections.append(_pareto_section(summary))
    hybrid = [r for r in summary.runs if r.kind == "hybrid"]
    if hybrid:
        report.sections.append(_hybrid_section(summary, hybrid))
    if summary.probe is not None:
        report.sections.append(_probe_section(summary.probe))
    if summary.language is not None:
        report.sections.append(_language_section(summary.language))
    report.sections.append(_notes_section(summary))
    return report


def _facts(summary: TwoByTwoSummary) -> list[tuple[str, str]]:
    ev = summary.eval
    runs = summary.runs
    status = ("complete" if summary.base_done and runs and all(r.done for r in runs)
              else "incomplete (see the notes at the end)")
    hybrid = summary.hybrid
    facts = [
        ("run folder", summary.run_dir),
        ("model", str(summary.model)),
        ("fine-tuning set", str(summary.fine_tuning_set)),
        *[(CELL_LABELS[c], summary.cells[c]) for c in CELL_KEYS],
        ("evaluation", f"{ev.split} split, {ev.mode} mode, limit {ev.limit}, judges {ev.judges}"),
        ("sweep", f"methods {summary.sweep.methods}, epochs {summary.sweep.epochs}"),
    ]
    if hybrid.sources:
        facts.append(("hybrid", f"sources {hybrid.sources}, ratios {hybrid.ratios}, budget {hybrid.budget}, by "
                                f"{hybrid.mix_by}, {hybrid.mix_strategy}"))
    facts += [("significance", f"alpha = {summary.alpha:g}; 'no change' margin {summary.margin:g}"),
              ("status", status)]
    return facts


def _claims_section(summary: TwoByTwoSummary) -> Section:
    blocks: list[Any] = [Paragraph(
        "The paper's findings (arXiv 2603.14493) checked on this run's own samples, each as it is stated, with "
        f"paired exact McNemar statistics at alpha = {summary.alpha:g}. Directional claims ('recovers', 'forgets "
        "less', 'overfits'): 'held' when the one-sided test in the claimed direction rejects, 'not held' when the "
        "one-sided test of the opposite direction rejects. 'No forgetting' / 'stays' claims are non-inferiority "
        f"tests with margin {summary.margin:g}: 'held' when the lower end of the change's interval lies above "
        f"-{summary.margin:g}, 'not held' when the whole interval lies below it. 'not shown': neither.")]
    claims = summary.claims
    if not claims:
        blocks.append(Paragraph("No run has been evaluated yet."))
        return Section("Claims", blocks)
    tally: dict[str, dict[str, int]] = {}
    for c in claims:
        tally.setdefault(c.id, {"held": 0, "not held": 0, "not shown": 0})[c.verdict] += 1
    blocks.append(Table(["claim", "held", "not held", "not shown"],
                        [[CLAIM_TITLES.get(k, k), str(v["held"]), str(v["not held"]), str(v["not shown"])]
                         for k, v in tally.items()], "Verdicts per claim, over every run (or pair of runs) it applies to."))
    rows = []
    for c in claims:
        test = c.check.test
        rows.append([CLAIM_TITLES.get(c.id, c.id), ", ".join(c.runs), c.verdict,
                     f"{test.delta_of} = {_estimate(test.delta)}" if test else "-",
                     claim_test_text(c.check)])
    blocks.append(Table(["claim", "runs", "verdict", "effect [interval]", "test"], rows,
                        "At a glance; the sentences below give the numbers behind each verdict."))
    blocks.append(ClaimList([Claim(c.check.claim, c.verdict, c.check.evidence, list(c.details)) for c in claims]))
    return Section("Claims", blocks)


def _grid_panel(title: str, accuracy: dict[str, float | None], change: dict[str, float | None] | None) -> HeatmapPanel:
    values = [[accuracy.get(c) for c in row] for row in GRID_CELLS]
    notes = []
    for row in GRID_CELLS:
        line = []
        for c in row:
            acc = accuracy.get(c)
            text = format_number(acc, 2)
            if change is not None and change.get(c) is not None and acc is not None:
                text += f"\n({change[c] + 0.0:+.2f})"  # + 0.0: no "-0.00"
            line.append(text)
        notes.append(line)
    return HeatmapPanel(title, values, list(GRID_ROWS), list(GRID_COLS), notes)


def _grids_section(summary: TwoByTwoSummary) -> Section:
    base = {c: (e.value if (e := summary.base.get(c)) else None) for c in CELL_KEYS}
    blocks: list[Any] = [Paragraph(
        "Accuracy on the four cells before (base) and after each run; in brackets the change from the base model "
        "(paired on the same samples). Rows: images of the task (ID) or not (OOD); columns: the task's question "
        "type (ID text) or other questions (OOD text).")]
    groups: dict[str, list[RunPoint]] = {}
    for r in summary.runs:
        key = r.method_name if r.kind == "sweep" else "hybrid"
        groups.setdefault(key, []).append(r)
    for key, runs in groups.items():
        panels = [_grid_panel("base", base, None)]
        for r in runs:
            forgetting = r.forgetting
            change = {c: (-forgetting[c] if forgetting.get(c) is not None else None) for c in CELL_KEYS}
            panels.append(_grid_panel(_run_label(r), r.after, change))
        png = heatmap(panels, title=f"2x2 accuracy: {key}", colorbar_label="accuracy", ncols=min(4, len(panels)))
        blocks.append(Figure(figure_name(f"grid-{key}"), png, f"{key}: base model and each run, 2x2 accuracy."))
    rows = [["base", "-", "-", *[_estimate(summary.base.get(c)) for c in CELL_KEYS]]]
    for r in summary.runs:
        rows.append([r.name, _params_text(r.trainable_parameters), "yes" if r.done else "no",
                     *[_cell_text(r.cells.get(c)) for c in CELL_KEYS]])
    blocks.append(Table(["run", "trainable parameters", "done", *[CELL_LABELS[c] for c in CELL_KEYS]], rows,
                        "Accuracy [Wilson interval]; after a run, its change from the base model on the same samples "
                        "(McNemar p)."))
    return Section("2x2 grids before and after", blocks)


def _sweep_section(summary: TwoByTwoSummary, sweep: list[RunPoint]) -> Section:
    blocks: list[Any] = [Paragraph(
        "Forgetting = base - tuned accuracy on the same samples (positive: the run forgot; on the target cell a "
        "negative value is the gain). One panel per cell; rows are methods, columns learning rates.")]
    limit = max([abs(v) for r in sweep for v in r.forgetting.values() if v is not None] + [0.05])
    for epochs, grids in summary.heatmaps.items():
        panels = []
        for c in CELL_KEYS:
            g = grids.cells[c]
            panels.append(HeatmapPanel(CELL_LABELS[c], g.values, g.rows, g.cols,
                                       [[_signed(v) for v in row] for row in g.values],
                                       xlabel="learning rate", ylabel="method"))
        png = heatmap(panels, title=f"Forgetting over (method, learning rate), {epochs} epoch(s)", vmin=-limit,
                      vmax=limit, cmap="RdBu_r", colorbar_label="forgetting (base - tuned)")
        blocks.append(Figure(figure_name(f"sweep-forgetting-e{epochs}"), png,
                             f"{epochs} epoch(s): red = forgot, blue = improved; blank = no run."))
        p = grids.trainable_parameters
        blocks.append(Table(["method", *p.cols], [[row, *[_params_text(v) for v in vals]]
                                                  for row, vals in zip(p.rows, p.values)],
                            f"Trainable parameters of each sweep point ({epochs} epoch(s))."))
    rows = []
    for r in sweep:
        other = r.other.forgetting if r.other else None
        ood = r.ood_image.forgetting if r.ood_image else None
        rows.append([r.name, r.method_name, f"{r.lr:g}" if r.lr is not None else "-", str(r.epochs),
                     _params_text(r.trainable_parameters), _estimate(r.target_gain_interval),
                     _estimate(other.delta if other else None), _estimate(ood.delta if ood else None),
                     format_p(ood.p_value if ood else None), format_number(r.final_loss)])
    blocks.append(Table(["run", "method", "lr", "epochs", "trainable parameters", "target gain",
                         "forgetting (3 other cells)", "forgetting (OOD images)", "McNemar p (OOD images)",
                         "final loss"], rows,
                        "Gain = tuned - base on the target cell; forgetting = base - tuned pooled over the cells named, "
                        "with Newcombe intervals."))
    return Section("Regularisation sweep", blocks)


def _pareto_section(summary: TwoByTwoSummary) -> Section:
    runs = summary.runs
    panels = [ParetoPanel(lambda r: r.forgetting_other, lambda r: r.pareto_other, "forgetting on the 3 other cells"),
              ParetoPanel(lambda r: r.forgetting_ood_image, lambda r: r.pareto_ood_image,
                          "forgetting on the OOD-image cells")]
    png = pareto_plot(runs, panels)
    front = [r.name for r in runs if r.pareto_other]
    front_ood = [r.name for r in runs if r.pareto_ood_image]
    key = [[str(i), r.name, _run_label(r), _params_text(r.trainable_parameters), format_number(r.target_gain),
            format_number(r.forgetting_other), format_number(r.forgetting_ood_image),
            ", ".join(n for n, on in (("3 other", r.pareto_other), ("OOD images", r.pareto_ood_image)) if on) or "-"]
           for i, r in enumerate(runs, 1)]
    return Section("Pareto front: target gain vs forgetting", [
        Figure("pareto", png, "Every run as a numbered point (circles: sweep, triangles: hybrid; the table below "
                              "names each number); the dark line joins the Pareto front (no other run has less "
                              "forgetting and more gain). Runs at the same place share one label."),
        Table(["#", "run", "setting", "trainable parameters", "target gain", "forgetting (3 other cells)",
               "forgetting (OOD images)", "on the front"], key, "The numbers in the Pareto plot."),
        BulletList([f"front (3 other cells): {', '.join(front) or '-'}",
                    f"front (OOD-image cells): {', '.join(front_ood) or '-'}"]),
    ])


def _hybrid_section(summary: TwoByTwoSummary, hybrid: list[RunPoint]) -> Section:
    mix_bys = list(dict.fromkeys(str(r.mix_by) for r in hybrid if (r.ratio or 0) > 0)) or ["sample"]
    colours = colour_map([f"by {m}" for m in mix_bys])
    panels = []
    for c in CELL_KEYS:
        series = []
        for m in mix_bys:
            pts = sorted([r for r in hybrid if (r.ratio or 0) == 0 or r.mix_by == m], key=lambda r: r.ratio or 0.0)
            after = [(cell.after if (cell := r.cells.get(c)) else None) for r in pts]
            series.append(Series(f"by {m}", [r.ratio or 0.0 for r in pts],
                                 [a.value if a else None for a in after],
                                 [a.low if a else None for a in after],
                                 [a.high if a else None for a in after]))
        base = summary.base.get(c)
        refs = [ReferenceLine("base model", base.value, base.low, base.high)] if base else []
        panels.append(LinePanel(CELL_LABELS[c], series, refs, ylabel="accuracy", xlabel="share r of other data",
                                ylim=SHARE_RANGE))
    png = line_plot(panels, title="Data-hybrid training: accuracy vs share of other data", ncols=2, colours=colours)
    rows = []
    for r in hybrid:
        rows.append([r.name, format_number(r.ratio, 2), str(r.mix_by),
                     ", ".join(f"{k}: {v}" for k, v in (r.train_examples or {}).items()) or "-",
                     *[_cell_text(r.cells.get(c)) for c in CELL_KEYS]])
    return Section("Data-hybrid training", [
        Figure("hybrid", png, "Accuracy per cell against the share r of other data in the fixed budget, with Wilson "
                              "intervals; dashed: the base model."),
        Table(["run", "r", "by", "training examples", *[CELL_LABELS[c] for c in CELL_KEYS]], rows,
              "Accuracy and change from the base model per cell."),
    ])


def _probe_section(probe: ProbeSummary) -> Section:
    """The judge-free probe of every run: KL from the base model (and label mass) against measured forgetting."""
    points = [p.to_dict() for p in probe.points]  # the probe widgets plot mappings
    corr = probe.correlation
    sentences = [
        correlation_sentence(corr.ood_image, "the probe's KL and measured forgetting on the OOD-image cells", "run"),
        correlation_sentence(corr.other, "the probe's KL and measured forgetting on the 3 other cells", "run"),
        correlation_sentence(corr.label_mass_ood_image, "the mass on the fine-tuning labels and forgetting on "
                                                        "the OOD-image cells", "run"),
    ]
    label_set = probe.label_set or "fine-tuning"
    blocks: list[Any] = [BulletList(sentences)]
    panels = [scatter_panel("OOD-image cells", points, "kl_ood_image", "forgetting_ood_image", "group",
                            ylabel="forgetting (base - tuned accuracy)"),
              scatter_panel("3 other cells", points, "kl_other", "forgetting_other", "group",
                            ylabel="forgetting (base - tuned accuracy)"),
              scatter_panel(f"mass on {label_set} label tokens", points, "label_mass_value", "forgetting_ood_image",
                            "group", xlabel="probability on the label tokens",
                            ylabel="forgetting on OOD-image cells")]
    panels = [p for p in panels if p.series]
    if panels:
        colours = colour_map(list(dict.fromkeys(str(p.group) for p in probe.points)))
        blocks.append(Figure("probe", line_plot(panels, title="Judge-free forgetting probe vs measured forgetting",
                                                colours=colours, ncols=len(panels)),
                             "Each run after training: KL(base || tuned) of the next-token distribution at the answer "
                             "position, mean over the probe samples of the cells named (no generation, no judge), "
                             "against the forgetting measured on the same cells (base - tuned accuracy, paired). "
                             "Right: the probability the tuned model puts on the first tokens of the fine-tuning "
                             "labels. Colours: sweep methods; hybrid runs together."))
    base_mass = probe.base_label_mass
    rows = [[p.name, *[format_number(p.kl_cells.get(c)) for c in CELL_KEYS],
             format_estimate(p.label_mass) if p.label_mass else "-",
             _signed(p.forgetting_ood_image), _signed(p.forgetting_other)] for p in probe.points]
    blocks.append(Table(["run", *[f"KL {CELL_LABELS[c]}" for c in CELL_KEYS], "label mass",
                         "forgetting (OOD images)", "forgetting (3 other cells)"], rows,
                        "KL in nats, mean over each cell's probe samples; label mass with a bootstrap interval"
                        + (f" (base model: {format_number(base_mass)})" if base_mass is not None else "")
                        + "; forgetting = base - tuned accuracy on the same cells."))
    if probe.missing:
        blocks.append(Paragraph(f"No probe measured for {', '.join(probe.missing)} (run before the probe existed "
                                "or with probe.enabled false)."))
    return Section("Judge-free forgetting probe", blocks)


def _language_section(lang: LanguageSummary) -> Section:
    """Language forgetting on the text set (outside the grid): judged accuracy and the judge-free scores per run."""
    confidence = f"{lang.confidence:.0%}"
    blocks: list[Any] = []
    if lang.sentences:
        blocks.append(BulletList(lang.sentences))
    elif lang.base is None:
        blocks.append(Paragraph("The base model's language scores are missing (base/language.jsonl): no change can "
                                "be computed; rerun the study to measure them."))
    rows = []
    if lang.base:
        rows.append(["base model", "0", *language_table_cells(lang.base), "-"])
    for p in lang.points:
        rows.append([p.name, str(p.scores["epoch"]), *language_table_cells(p.scores), _estimate(p.accuracy_change)])
    blocks.append(Table(["run", "epochs", *LANGUAGE_COLUMNS, "change in text accuracy"], rows,
                        f"The {display_names([lang.dataset])[lang.dataset]} set (no image), evaluated beside "
                        "the four cells. Text accuracy: judged "
                        f"answers, {confidence} Wilson interval; its change: tuned - base on the same prompts "
                        "(Newcombe interval). Log-likelihood of the reference answers in nats per token and perplexity "
                        f"of held-out prose, teacher-forced, with {confidence} percentile bootstrap intervals over "
                        "answers / texts; their changes are tuned - base on the same items (paired bootstrap); "
                        "forgetting shows as log-likelihood down and perplexity up."))
    if lang.missing:
        blocks.append(Paragraph(f"No language scores for {', '.join(lang.missing)} (run before they existed, "
                                "or with language.enabled false)."))
    return Section("Language forgetting (text set)", blocks)


def _notes_section(summary: TwoByTwoSummary) -> Section:
    notes = summary.notes
    return Section("Notes", [BulletList(notes) if notes else Paragraph("Every run finished.")])


# ------------------------------------------------------------------------------------------------ helpers


def _run_label(r: RunPoint) -> str:
    if r.kind == "hybrid":
        return f"r={r.ratio or 0:g}" + (f" {r.mix_by}" if (r.ratio or 0) > 0 else "")
    lr = f"{r.lr:g}" if r.lr is not None else "default"
    return f"lr {lr}, {r.epochs} ep"


def _signed(v: float | None) -> str:
    return "" if v is None else f"{v + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _estimate(e: Estimate | None, digits: int = 3) -> str:
    return format_estimate(e.to_dict() if e is not None else None, digits)


def _params_text(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"


def _cell_text(cell: CellMetrics | None) -> str:
    if not cell:
        return "-"
    f = cell.forgetting.to_dict()  # as metrics.json holds it: a non-finite change reads as 0
    change = 0.0 - (f["delta"]["value"] or 0.0)
    return f"{_estimate(cell.after)} ({change:+.3f}, p={format_p(f['p_value'])})"


@dataclass(frozen=True)
class ParetoPanel:
    """One panel of the Pareto plot: a run's forgetting (x), whether it is on that front, the axis label."""

    forgetting: Callable[[RunPoint], float | None]
    on_front: Callable[[RunPoint], bool]
    xlabel: str


def pareto_plot(runs: Sequence[RunPoint], panels: Sequence[ParetoPanel]) -> bytes:
    """Target gain (y) against forgetting (x), one panel per forgetting measure: every run a point numbered as in
    the key table (its position in ``runs``, from 1) and coloured by method, the Pareto front joined by a line."""
    scatter = []
    for panel in panels:
        points = [ScatterPoint(i, panel.forgetting(r), r.target_gain,
                               r.method_name if r.kind == "sweep" else f"hybrid ({r.method_name})",
                               "o" if r.kind == "sweep" else "^") for i, r in enumerate(runs, 1)]
        on_front = [(i, r) for i, r in enumerate(runs, 1) if panel.on_front(r) and _finite(panel.forgetting(r))]
        front = [i for i, r in sorted(on_front, key=lambda ir: float(panel.forgetting(ir[1])))]
        scatter.append(ScatterPanel("", points, f"{panel.xlabel} (base - tuned)", "target gain (tuned - base)",
                                    front=front))
    return numbered_scatter(scatter, title="Target gain vs forgetting")


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))
