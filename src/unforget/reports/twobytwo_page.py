"""The 2x2 report page, built from the summary dict of :func:`unforget.reports.twobytwo.summarise_twobytwo` alone."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from .document import (
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
)
from .plots import DPI, PALETTE, HeatmapPanel, LinePanel, ReferenceLine, Series, colour_map, heatmap, line_plot
from .language import LANGUAGE_COLUMNS, language_table_cells
from .names import display_names
from .probe import correlation_sentence, scatter_panel
from .twobytwo import CELL_KEYS, CELL_LABELS

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


def build_twobytwo_report(summary: dict[str, Any]) -> Report:
    report = Report(title=f"2x2 study: {summary['name']}", facts=_facts(summary))
    report.sections.append(_claims_section(summary))
    report.sections.append(_grids_section(summary))
    sweep = [r for r in summary["runs"] if r["kind"] == "sweep"]
    if sweep:
        report.sections.append(_sweep_section(summary, sweep))
    if summary["runs"]:
        report.sections.append(_pareto_section(summary))
    hybrid = [r for r in summary["runs"] if r["kind"] == "hybrid"]
    if hybrid:
        report.sections.append(_hybrid_section(summary, hybrid))
    if summary.get("probe"):
        report.sections.append(_probe_section(summary))
    if summary.get("language"):
        report.sections.append(_language_section(summary))
    report.sections.append(_notes_section(summary))
    return report


def _facts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    ev = summary.get("eval") or {}
    runs = summary["runs"]
    status = ("complete" if summary.get("base_done") and runs and all(r["done"] for r in runs)
              else "incomplete (see the notes at the end)")
    hybrid = summary.get("hybrid") or {}
    facts = [
        ("run folder", summary["run_dir"]),
        ("model", str(summary.get("model"))),
        ("fine-tuning set", str(summary["fine_tuning_set"])),
        *[(CELL_LABELS[c], summary["cells"][c]) for c in CELL_KEYS],
        ("evaluation", f"{ev.get('split')} split, {ev.get('mode')} mode, limit {ev.get('limit')}, judges "
                       f"{ev.get('judges')}"),
        ("sweep", f"methods {summary['sweep'].get('methods')}, epochs {summary['sweep'].get('epochs')}"),
    ]
    if hybrid.get("sources"):
        facts.append(("hybrid", f"sources {hybrid['sources']}, ratios {hybrid.get('ratios')}, budget "
                                f"{hybrid.get('budget')}, by {hybrid.get('mix_by')}, {hybrid.get('mix_strategy')}"))
    facts += [("significance", f"alpha = {summary['alpha']:g}; 'no change' margin {summary['margin']:g}"),
              ("status", status)]
    return facts


def _claims_section(summary: dict[str, Any]) -> Section:
    blocks: list[Any] = [Paragraph(
        "The paper's findings (arXiv 2603.14493) checked on this run's own samples with paired exact McNemar tests "
        f"at alpha = {summary['alpha']:g}. 'held': significant in the claimed direction (for 'no forgetting' / "
        f"'stays': the interval of the change lies within +/-{summary['margin']:g}); 'not held': significant the "
        "other way (or the interval lies beyond the margin); 'not shown': neither.")]
    claims = summary["claims"]
    if not claims:
        blocks.append(Paragraph("No run has been evaluated yet."))
        return Section("Claims", blocks)
    tally: dict[str, dict[str, int]] = {}
    for c in claims:
        tally.setdefault(c["id"], {"held": 0, "not held": 0, "not shown": 0})[c["verdict"]] += 1
    blocks.append(Table(["claim", "held", "not held", "not shown"],
                        [[CLAIM_TITLES.get(k, k), str(v["held"]), str(v["not held"]), str(v["not shown"])]
                         for k, v in tally.items()], "Verdicts per claim, over every run (or pair of runs) it applies to."))
    rows = []
    for c in claims:
        test = c.get("test") or {}
        delta = test.get("delta")
        rows.append([CLAIM_TITLES.get(c["id"], c["id"]), ", ".join(c["runs"]), c["verdict"],
                     f"{test.get('delta_of')} = {format_estimate(delta)}" if delta else "-",
                     format_p(test.get("p_value")) if test else "-"])
    blocks.append(Table(["claim", "runs", "verdict", "effect [interval]", "p"], rows,
                        "At a glance; the sentences below give the numbers behind each verdict."))
    blocks.append(ClaimList([Claim.from_dict(c) for c in claims]))
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


def _grids_section(summary: dict[str, Any]) -> Section:
    base = {c: (summary["base"].get(c) or {}).get("value") for c in CELL_KEYS}
    blocks: list[Any] = [Paragraph(
        "Accuracy on the four cells before (base) and after each run; in brackets the change from the base model "
        "(paired on the same samples). Rows: images of the task (ID) or not (OOD); columns: the task's question "
        "type (ID text) or other questions (OOD text).")]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in summary["runs"]:
        key = r["method_name"] if r["kind"] == "sweep" else "hybrid"
        groups.setdefault(key, []).append(r)
    for key, runs in groups.items():
        panels = [_grid_panel("base", base, None)]
        for r in runs:
            change = {c: (-r["forgetting"][c] if r["forgetting"].get(c) is not None else None) for c in CELL_KEYS}
            panels.append(_grid_panel(_run_label(r), r["after"], change))
        png = heatmap(panels, title=f"2x2 accuracy: {key}", colorbar_label="accuracy", ncols=min(4, len(panels)))
        blocks.append(Figure(figure_name(f"grid-{key}"), png, f"{key}: base model and each run, 2x2 accuracy."))
    rows = [["base", "-", "-", *[format_estimate(summary["base"].get(c)) for c in CELL_KEYS]]]
    for r in summary["runs"]:
        rows.append([r["name"], _params_text(r.get("trainable_parameters")), "yes" if r["done"] else "no",
                     *[_cell_text(r["cells"].get(c)) for c in CELL_KEYS]])
    blocks.append(Table(["run", "trainable parameters", "done", *[CELL_LABELS[c] for c in CELL_KEYS]], rows,
                        "Accuracy [Wilson interval]; after a run, its change from the base model on the same samples "
                        "(McNemar p)."))
    return Section("2x2 grids before and after", blocks)


def _sweep_section(summary: dict[str, Any], sweep: list[dict[str, Any]]) -> Section:
    blocks: list[Any] = [Paragraph(
        "Forgetting = base - tuned accuracy on the same samples (positive: the run forgot; on the target cell a "
        "negative value is the gain). One panel per cell; rows are methods, columns learning rates.")]
    limit = max([abs(v) for r in sweep for v in r["forgetting"].values() if v is not None] + [0.05])
    for epochs, grids in summary["heatmaps"].items():
        panels = []
        for c in CELL_KEYS:
            g = grids[c]
            panels.append(HeatmapPanel(CELL_LABELS[c], g["values"], g["rows"], g["cols"],
                                       [[_signed(v) for v in row] for row in g["values"]],
                                       xlabel="learning rate", ylabel="method"))
        png = heatmap(panels, title=f"Forgetting over (method, learning rate), {epochs} epoch(s)", vmin=-limit,
                      vmax=limit, cmap="RdBu_r", colorbar_label="forgetting (base - tuned)")
        blocks.append(Figure(figure_name(f"sweep-forgetting-e{epochs}"), png,
                             f"{epochs} epoch(s): red = forgot, blue = improved; blank = no run."))
        p = grids["trainable_parameters"]
        blocks.append(Table(["method", *p["cols"]], [[row, *[_params_text(v) for v in vals]]
                                                     for row, vals in zip(p["rows"], p["values"])],
                            f"Trainable parameters of each sweep point ({epochs} epoch(s))."))
    rows = []
    for r in sweep:
        other = r.get("forgetting_other_test") or {}
        ood = r.get("forgetting_ood_image_test") or {}
        rows.append([r["name"], r["method_name"], f"{r['lr']:g}" if r["lr"] is not None else "-", str(r["epochs"]),
                     _params_text(r.get("trainable_parameters")), format_estimate(r.get("target_gain_interval")),
                     format_estimate(other.get("delta")), format_estimate(ood.get("delta")),
                     format_p(ood.get("p_value")), format_number(r.get("final_loss"))])
    blocks.append(Table(["run", "method", "lr", "epochs", "trainable parameters", "target gain",
                         "forgetting (3 other cells)", "forgetting (OOD images)", "McNemar p (OOD images)",
                         "final loss"], rows,
                        "Gain = tuned - base on the target cell; forgetting = base - tuned pooled over the cells named, "
                        "with Newcombe intervals."))
    return Section("Regularisation sweep", blocks)


def _pareto_section(summary: dict[str, Any]) -> Section:
    runs = summary["runs"]
    panels = [("forgetting_other", "pareto_other", "forgetting on the 3 other cells"),
              ("forgetting_ood_image", "pareto_ood_image", "forgetting on the OOD-image cells")]
    png = pareto_plot(runs, panels)
    front = [r["name"] for r in runs if r.get("pareto_other")]
    front_ood = [r["name"] for r in runs if r.get("pareto_ood_image")]
    return Section("Pareto front: target gain vs forgetting", [
        Figure("pareto", png, "Every run as a point (circles: sweep, triangles: hybrid), labelled with its learning "
                              "rate and trainable parameters; the line joins the Pareto front (no other run has "
                              "less forgetting and more gain)."),
        BulletList([f"front (3 other cells): {', '.join(front) or '-'}",
                    f"front (OOD-image cells): {', '.join(front_ood) or '-'}"]),
    ])


def _hybrid_section(summary: dict[str, Any], hybrid: list[dict[str, Any]]) -> Section:
    mix_bys = list(dict.fromkeys(str(r.get("mix_by")) for r in hybrid if (r.get("ratio") or 0) > 0)) or ["sample"]
    colours = colour_map([f"by {m}" for m in mix_bys])
    panels = []
    for c in CELL_KEYS:
        series = []
        for m in mix_bys:
            pts = sorted([r for r in hybrid if (r.get("ratio") or 0) == 0 or r.get("mix_by") == m],
                         key=lambda r: r["ratio"] or 0.0)
            cells = [r["cells"].get(c) or {} for r in pts]
            series.append(Series(f"by {m}", [r["ratio"] or 0.0 for r in pts],
                                 [(x.get("after") or {}).get("value") for x in cells],
                                 [(x.get("after") or {}).get("low") for x in cells],
                                 [(x.get("after") or {}).get("high") for x in cells]))
        base = summary["base"].get(c) or {}
        refs = [ReferenceLine("base model", base["value"], base.get("low"), base.get("high"))] if base else []
        panels.append(LinePanel(CELL_LABELS[c], series, refs, ylabel="accuracy", xlabel="share r of other data",
                                ylim=SHARE_RANGE))
    png = line_plot(panels, title="Data-hybrid training: accuracy vs share of other data", ncols=2, colours=colours)
    rows = []
    for r in hybrid:
        rows.append([r["name"], format_number(r.get("ratio"), 2), str(r.get("mix_by")),
                     ", ".join(f"{k}: {v}" for k, v in (r.get("train_examples") or {}).items()) or "-",
                     *[_cell_text(r["cells"].get(c)) for c in CELL_KEYS]])
    return Section("Data-hybrid training", [
        Figure("hybrid", png, "Accuracy per cell against the share r of other data in the fixed budget, with Wilson "
                              "intervals; dashed: the base model."),
        Table(["run", "r", "by", "training examples", *[CELL_LABELS[c] for c in CELL_KEYS]], rows,
              "Accuracy and change from the base model per cell."),
    ])


def _probe_section(summary: dict[str, Any]) -> Section:
    """The judge-free probe of every run: KL from the base model (and label mass) against measured forgetting."""
    probe = summary["probe"]
    points = probe["points"]
    corr = probe["correlation"]
    sentences = [
        correlation_sentence(corr["ood_image"], "the probe's KL and measured forgetting on the OOD-image cells", "run"),
        correlation_sentence(corr["other"], "the probe's KL and measured forgetting on the 3 other cells", "run"),
        correlation_sentence(corr["label_mass_ood_image"], "the mass on the fine-tuning labels and forgetting on "
                                                           "the OOD-image cells", "run"),
    ]
    label_set = probe.get("label_set") or "fine-tuning"
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
        colours = colour_map(list(dict.fromkeys(str(p["group"]) for p in points)))
        blocks.append(Figure("probe", line_plot(panels, title="Judge-free forgetting probe vs measured forgetting",
                                                colours=colours, ncols=len(panels)),
                             "Each run after training: KL(base || tuned) of the next-token distribution at the answer "
                             "position, mean over the probe samples of the cells named (no generation, no judge), "
                             "against the forgetting measured on the same cells (base - tuned accuracy, paired). "
                             "Right: the probability the tuned model puts on the first tokens of the fine-tuning "
                             "labels. Colours: sweep methods; hybrid runs together."))
    base_mass = probe.get("base_label_mass")
    rows = [[p["name"], *[format_number(p["kl_cells"].get(c)) for c in CELL_KEYS],
             format_estimate(p["label_mass"]) if p.get("label_mass") else "-",
             _signed(p["forgetting_ood_image"]), _signed(p["forgetting_other"])] for p in points]
    blocks.append(Table(["run", *[f"KL {CELL_LABELS[c]}" for c in CELL_KEYS], "label mass",
                         "forgetting (OOD images)", "forgetting (3 other cells)"], rows,
                        "KL in nats, mean over each cell's probe samples; label mass with a bootstrap interval"
                        + (f" (base model: {format_number(base_mass)})" if base_mass is not None else "")
                        + "; forgetting = base - tuned accuracy on the same cells."))
    if probe.get("missing"):
        blocks.append(Paragraph(f"No probe measured for {', '.join(probe['missing'])} (run before the probe existed "
                                "or with probe.enabled false)."))
    return Section("Judge-free forgetting probe", blocks)


def _language_section(summary: dict[str, Any]) -> Section:
    """Language forgetting on the text set (outside the grid): judged accuracy and the judge-free scores per run."""
    lang = summary["language"]
    confidence = f"{lang['confidence']:.0%}"
    blocks: list[Any] = []
    if lang["sentences"]:
        blocks.append(BulletList(lang["sentences"]))
    elif lang.get("base") is None:
        blocks.append(Paragraph("The base model's language scores are missing (base/language.jsonl): no change can "
                                "be computed; rerun the study to measure them."))
    rows = []
    if lang.get("base"):
        rows.append(["base model", "0", *language_table_cells(lang["base"]), "-"])
    for p in lang["points"]:
        rows.append([p["name"], str(p["epoch"]), *language_table_cells(p),
                     format_estimate(p.get("accuracy_change"))])
    blocks.append(Table(["run", "epochs", *LANGUAGE_COLUMNS, "change in text accuracy"], rows,
                        f"The {display_names([lang['dataset']])[lang['dataset']]} set (no image), evaluated beside "
                        "the four cells. Text accuracy: judged "
                        f"answers, {confidence} Wilson interval; its change: tuned - base on the same prompts "
                        "(Newcombe interval). Log-likelihood of the reference answers in nats per token and perplexity "
                        f"of held-out prose, teacher-forced, with {confidence} percentile bootstrap intervals over "
                        "answers / texts; their changes are tuned - base on the same items (paired bootstrap); "
                        "forgetting shows as log-likelihood down and perplexity up."))
    if lang.get("missing"):
        blocks.append(Paragraph(f"No language scores for {', '.join(lang['missing'])} (run before they existed, "
                                "or with language.enabled false)."))
    return Section("Language forgetting (text set)", blocks)


def _notes_section(summary: dict[str, Any]) -> Section:
    notes = summary.get("notes") or []
    return Section("Notes", [BulletList(notes) if notes else Paragraph("Every run finished.")])


# ------------------------------------------------------------------------------------------------ helpers


def _run_label(r: dict[str, Any]) -> str:
    if r["kind"] == "hybrid":
        return f"r={r.get('ratio') or 0:g}" + (f" {r['mix_by']}" if (r.get("ratio") or 0) > 0 else "")
    lr = f"{r['lr']:g}" if r["lr"] is not None else "default"
    return f"lr {lr}, {r['epochs']} ep"


def _signed(v: float | None) -> str:
    return "" if v is None else f"{v + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _params_text(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"


def _cell_text(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    f = cell["forgetting"]
    change = 0.0 - (f["delta"]["value"] or 0.0)
    return f"{format_estimate(cell['after'])} ({change:+.3f}, p={format_p(f['p_value'])})"


def pareto_plot(runs: Sequence[dict[str, Any]], panels: Sequence[tuple[str, str, str]]) -> bytes:
    """Target gain (y) against forgetting (x), one panel per forgetting measure: every run a point coloured by
    method, the Pareto front joined by a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    colours = colour_map([r["method_name"] for r in runs])
    fig = MplFigure(figsize=(5.4 * len(panels), 4.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    handles: dict[str, Any] = {}
    for ax, (x_key, front_key, xlabel) in zip(axes, panels):
        pts = [r for r in runs if _finite(r.get(x_key)) and _finite(r.get("target_gain"))]
        for r in pts:
            colour = colours.get(r["method_name"], PALETTE[0])
            marker = "o" if r["kind"] == "sweep" else "^"
            h = ax.scatter([r[x_key]], [r["target_gain"]], color=colour, marker=marker, s=36, zorder=3)
            handles.setdefault(r["method_name"] if r["kind"] == "sweep" else f"hybrid ({r['method_name']})", h)
            label = _run_label(r) + f"\n{_params_text(r.get('trainable_parameters'))}"
            ax.annotate(label, (r[x_key], r["target_gain"]), fontsize=6, xytext=(4, 3), textcoords="offset points")
        front = sorted([r for r in pts if r.get(front_key)], key=lambda r: r[x_key])
        if len(front) > 1:
            ax.plot([r[x_key] for r in front], [r["target_gain"] for r in front], color="#555555", linewidth=1,
                    linestyle=(0, (4, 2)), zorder=2)
        ax.axhline(0, color="#bbbbbb", linewidth=0.8)
        ax.axvline(0, color="#bbbbbb", linewidth=0.8)
        ax.set_xlabel(f"{xlabel} (base - tuned)", fontsize=9)
        ax.set_ylabel("target gain (tuned - base)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if not pts:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
                   fontsize=8, frameon=False)
    fig.suptitle("Target gain vs forgetting", fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))
