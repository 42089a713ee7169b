"""The EMT report page, built from the study's summary (:class:`.summary.EmtSummary`) alone."""

from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence, TypeVar

from ...reports.document import (
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
from ...reports.language import LANGUAGE_COLUMNS, language_panels, language_table_cells
from ...reports.names import named_refs
from ...reports.plots import (
    HeatmapPanel,
    LinePanel,
    ReferenceLine,
    Series,
    colour_map,
    confusion_panel,
    heatmap,
    line_plot,
    moving_average,
)
from ...reports.probe import correlation_sentence, scatter_panel
from ...stats import Estimate, SeedSummary
from .summary import Baseline, EmtSummary, EpochFigures

SHARE_RANGE = (-0.03, 1.03)  # y range of shares: a curve at 0 or 1 stays visible off the frame
BASELINE_NAMES = {"linear-probe": "linear probe (vision encoder)", "zero-shot": "zero-shot CLIP (vision encoder)"}
CLAIM_TITLES = {
    "early-fine-tuning-helps": "(1) epoch 1 beats base on the other sets",
    "long-fine-tuning-degrades": "(2) last epoch worse than best on the other sets",
    "fine-tuning-labels-leak": "(3) more answers with fine-tuning labels",
    "projector-retains-more": "(4) projector-only retains more than LoRA",
}
SMOOTH_ABOVE = 50  # loss curves with more steps get a moving average over the raw values

P = TypeVar("P")
Figures = Callable[[EpochFigures], "Estimate | None"]  # which estimate of a point a curve plots


def build_emt_report(summary: EmtSummary) -> Report:
    arms = summary.arms
    colours = colour_map([a.name for a in arms])
    report = Report(title=f"EMT study: {summary.name}", facts=_facts(summary))
    report.sections.append(_claims_section(summary))
    report.sections.append(_forgetting_section(summary, colours))
    if summary.seed_summaries:
        report.sections.append(_seeds_section(summary))
    report.sections.append(_leak_section(summary, colours))
    report.sections.append(_concentration_section(summary, colours))
    if any(a.format_knowledge for a in arms):
        report.sections.append(_format_knowledge_section(summary, colours))
    if summary.probe:
        report.sections.append(_probe_section(summary, colours))
    if summary.language:
        report.sections.append(_language_section(summary, colours))
    if summary.classes:
        report.sections.append(_class_subset_section(summary, colours))
    confusion = _confusion_section(summary)
    if confusion.blocks:
        report.sections.append(confusion)
    alignment = _alignment_section(summary, colours)
    if alignment.blocks:
        report.sections.append(alignment)
    report.sections.append(_training_section(summary, colours))
    report.sections.append(_per_epoch_section(summary))
    report.sections.append(_method_section(summary))
    return report


# ------------------------------------------------------------------------------------------------ sections


def _facts(summary: EmtSummary) -> list[tuple[str, str]]:
    ev = summary.eval
    ft = _name(summary, summary.fine_tuning_set)
    if summary.classes:
        ft += f" (classes {summary.classes} only)"
    arms = summary.arms
    status = "complete" if summary.base_done and arms and all(a.done for a in arms) \
        and not summary.missing_arms else "incomplete (see the notes at the end)"
    return [
        ("run folder", summary.run_dir),
        ("model", str(summary.model)),
        ("fine-tuning set", ft),
        ("evaluated on", named_refs(summary.datasets, summary.names)
         + f" ({ev.split} split, {ev.mode} mode, limit {ev.limit}, judges {ev.judges})"),
        ("arms", ", ".join(f"{a.folder} ({a.method}, epochs {a.last_epoch})" for a in arms) or "none yet"),
        ("seeds", ", ".join(str(s) for s in summary.seeds)),
        ("significance", f"alpha = {summary.alpha:g}; intervals at {summary.confidence:.0%}"),
        ("status", status),
    ]


def _claims_section(summary: EmtSummary) -> Section:
    claims = [Claim(c.check.claim, c.check.verdict, c.check.evidence, list(c.details)) for c in summary.claims]
    intro = Paragraph(
        "EMT's findings checked on this run's own samples, each as it is stated: a one-sided paired exact McNemar "
        f"test in the claimed direction at alpha = {summary.alpha:g}. 'held': the one-sided test rejects; 'not "
        "held': the one-sided test of the opposite direction rejects; 'not shown': neither (with the samples that "
        "would show an effect of the observed size).")
    blocks: list[Any] = [intro]
    if not claims:
        blocks.append(Paragraph("No fine-tuning arm has been evaluated yet."))
        return Section("Claims", blocks)
    rows = []
    for c in summary.claims:
        test = c.check.test.to_dict() if c.check.test is not None else None
        rows.append([CLAIM_TITLES.get(c.id, c.id), c.arm, c.check.verdict,
                     f"{test['delta_of']} = {format_estimate(test['delta'])}" if test else "-",
                     claim_test_text(c.check)])
    blocks.append(Table(["claim", "arm", "verdict", "effect [interval]", "test"], rows,
                        "At a glance; the sentences below give the numbers behind each verdict."))
    blocks.append(ClaimList(claims))
    return Section("Claims", blocks)


def _forgetting_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    multi = len(summary.seeds) > 1
    panels = _curve_panels(summary, lambda p: p.accuracy, summary.datasets, "accuracy", SHARE_RANGE,
                           baselines=summary.baselines)
    caption = ("Accuracy vs epoch per dataset (epoch 0 = base model). "
               + ("Lines: mean over seeds; bars: +/- 1 sd over seeds (a seed spread, not a sample interval); "
                  "faint lines: single seeds. " if multi else
                  f"Bars: {summary.confidence:.0%} Wilson intervals. ")
               + "Dashed lines: the model's own vision encoder as a classifier.")
    blocks: list[Any] = [Figure("accuracy", line_plot(panels, title="Forgetting curves: accuracy vs epoch",
                                                      colours=colours), caption)]
    rows = []
    for arm in summary.arms:
        for d in summary.datasets:
            t = arm.table[d]
            f = t.forgetting.to_dict() if t.forgetting is not None else None
            rows.append([
                _dataset_label(summary, d), arm.folder, _format(t.base),
                f"{_format(t.best)} (epoch {t.best_epoch})" if t.best else "-",
                f"{_format(t.last)} (epoch {t.last_epoch})" if t.last else "-",
                format_estimate(f["delta"]) if f else "-",
                format_p(f["p_value"]) if f else "-",
                str(f["delta"]["n"]) if f else "-",
            ])
    blocks.append(Table(["dataset", "arm", "base", "best fine-tuned (epoch)", "last (epoch)",
                         "forgetting = base - last", "McNemar p", "paired n"], rows,
                        f"Accuracy with {summary.confidence:.0%} Wilson intervals. Forgetting is paired on the "
                        "samples judged in both evaluations (Newcombe interval, exact McNemar p); positive = forgot."))
    base_rows = [[_name(summary, d), BASELINE_NAMES.get(k, k), format_estimate(b.to_dict()), str(b.n),
                  str(b.n_train or "-")]
                 for d, kinds in summary.baselines.items() for k, b in kinds.items()]
    if base_rows:
        blocks.append(Table(["dataset", "baseline", "accuracy", "n", "train samples"], base_rows,
                            "The MLLM's vision encoder as a classifier on the same samples (EMT's comparison)."))
    return Section("Forgetting curves", blocks)


def _seeds_section(summary: EmtSummary) -> Section:
    rows = []
    for method, group in summary.seed_summaries.items():
        for d, figs in group.datasets.items():
            rows.append([_name(summary, d), method, str(len(group.seeds)), _seed_text(figs.best),
                         _seed_text(figs.last), _seed_text(figs.forgetting)])
    return Section("Spread over seeds", [
        Paragraph("Mean, sample sd and [min, max] over training seeds: how much another seed would move a figure. "
                  "This is a different question from the sample-level intervals above (another test set)."),
        Table(["dataset", "method", "seeds", "best accuracy", "last accuracy", "forgetting (base - last)"], rows,
              "mean +/- sd [min, max] over seeds"),
    ])


def _leak_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    ft = _name(summary, summary.fine_tuning_set)
    others = summary.other_datasets
    if not others:
        return Section("Hallucinated fine-tuning labels",
                       [Paragraph("Only the fine-tuning set was evaluated: there is no other dataset to leak into.")])
    panels = _curve_panels(summary, lambda p: p.leak_rate, others, f"share naming {ft} labels", SHARE_RANGE)
    fig = Figure("label_leak", line_plot(panels, title=f"Answers naming {ft} labels on the other datasets",
                                         colours=colours),
                 f"Share of answers on each other dataset that name a class of the fine-tuning set ({ft}), with "
                 f"{summary.confidence:.0%} Wilson intervals. On a set sharing labels with {ft} this includes "
                 "correct answers.")
    return Section("Hallucinated fine-tuning labels", [fig])


def _concentration_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    text_sets = set(summary.text_datasets)
    datasets = [d for d in summary.datasets if d not in text_sets]
    panels = (_curve_panels(summary, lambda p: p.top1_share, datasets, "top-1 share", SHARE_RANGE)
              + _curve_panels(summary, lambda p: p.normalised_entropy, datasets, "normalised entropy", SHARE_RANGE))
    fig = Figure("concentration", line_plot(panels, title="Prediction concentration vs epoch",
                                            ncols=len(datasets), colours=colours),
                 "Top row: share of class-naming answers on the most predicted class (1 = every answer is one class). "
                 "Bottom row: entropy of the predicted-class histogram / log2(number of classes) (0 = one class, "
                 "1 = uniform), with bootstrap intervals. Class counts used: "
                 + ", ".join(f"{_name(summary, d)} {n}" for d, n in summary.class_counts.items()
                             if d not in text_sets) + ".")
    no_class = Figure("no_class", line_plot(_curve_panels(summary, lambda p: p.no_class_rate, datasets,
                                                          "no-class rate", SHARE_RANGE),
                                            title="Answers naming no class vs epoch", colours=colours),
                      f"Share of answers that name no class of the dataset, with {summary.confidence:.0%} "
                      "Wilson intervals.")
    return Section("Prediction concentration", [fig, no_class])


def _format_knowledge_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    """Wrong answers split by whether the likelihood ranking still finds the class (eval.also_rank runs)."""
    arms = [a for a in summary.arms if a.format_knowledge]
    datasets = [d for d in summary.datasets if any(d in a.format_knowledge for a in arms)]  # type: ignore[operator]
    multi = len(summary.seeds) > 1
    panels = []
    for get, ylabel in ((lambda s: s.format_broke, "format broke"), (lambda s: s.knowledge_lost, "knowledge lost")):
        for d in datasets:
            series = [_series(a.folder if multi else a.name, a.format_knowledge.get(d, []),  # type: ignore[union-attr]
                              lambda p, get=get: get(p.split)) for a in arms]
            panels.append(LinePanel(_dataset_label(summary, d), series, ylabel=f"share: {ylabel}", xlabel="epoch",
                                    ylim=SHARE_RANGE, integer_x=True))
    fig = Figure("format_knowledge", line_plot(panels, title="Why answers are wrong: format broke vs knowledge lost",
                                               ncols=len(datasets), colours=colours),
                 "Top row: share of answers the exact judge rejects while the likelihood ranking of the class names "
                 "still puts the true class first (the model knows it but no longer says it in the expected form). "
                 "Bottom row: share wrong both ways (knowledge lost). "
                 f"{summary.confidence:.0%} Wilson intervals; epoch 0 = base model.")
    rows = []
    for a in arms:
        for d in datasets:
            points = a.format_knowledge.get(d) or []  # type: ignore[union-attr]
            if not points:
                continue
            last = points[-1]
            rows.append([_dataset_label(summary, d), a.folder, str(last.epoch), str(last.split.n),
                         _format(last.split.format_broke), _format(last.split.knowledge_lost),
                         _format(last.split.format_share) if last.split.format_share else "-"])
    table = Table(["dataset", "arm", "epoch", "n", "format broke", "knowledge lost", "format share of errors"], rows,
                  "Last evaluated epoch. Format share = format broke / (format broke + knowledge lost).")
    return Section("Format or knowledge", [fig, table])


def _probe_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    """The judge-free probe: KL from the base model vs epoch, label mass, and its rank correlation with forgetting."""
    probe = summary.probe
    assert probe is not None
    label_of = _arm_labels(summary)
    kl_panel = LinePanel(f"KL on {', '.join(_name(summary, d) for d in probe.datasets)}", [],
                         ylabel="KL(base || current), nats",
                         xlabel="epoch", integer_x=True)
    mass_panel = LinePanel(f"mass on {probe.label_set or 'label'} tokens", [], ylabel="probability",
                           xlabel="epoch", ylim=SHARE_RANGE, integer_x=True)
    for folder, curve in probe.curves.items():
        label = label_of.get(folder, folder)
        kl_panel.series.append(Series(label, [p.epoch for p in curve], [p.kl_others for p in curve]))
        mass = [p.label_mass for p in curve]
        mass_panel.series.append(Series(label, [p.epoch for p in curve], [m["value"] if m else None for m in mass],
                                        [m["low"] if m else None for m in mass],
                                        [m["high"] if m else None for m in mass]))
    scatter = scatter_panel("KL vs measured forgetting", [{**p.to_dict(), "label": label_of.get(p.arm, p.arm)}
                                                          for p in probe.points], "kl", "forgetting", "label",
                            ylabel="forgetting (base - epoch accuracy)")
    panels = [kl_panel, mass_panel] + ([scatter] if scatter.series else [])
    verdict = correlation_sentence(probe.correlation, "the probe's KL and measured forgetting", "(method, epoch)")
    fig = Figure("probe", line_plot(panels, title="Judge-free forgetting probe", colours=colours, ncols=len(panels)),
                 "Left: KL(base || current) of the next-token distribution at the answer position, mean over the "
                 "probe samples of the other datasets (no generation, no judge). Middle: probability on the first "
                 "tokens of the fine-tuning labels, with bootstrap intervals. Right: each fine-tuned epoch's KL "
                 "against its measured forgetting on the same datasets. " + verdict)
    rows = [[label_of.get(p.arm, p.arm), str(p.epoch), format_number(p.kl), format_number(p.forgetting), str(p.n)]
            for p in probe.points]
    return Section("Judge-free forgetting probe", [Paragraph(verdict), fig, Table(
        ["arm", "epoch", "KL (other datasets)", "forgetting", "paired n"], rows,
        "Forgetting = base accuracy - epoch accuracy on the other datasets, paired on samples judged in both.")])


def _language_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    """Language forgetting without a judge: held-out perplexity and answer log-likelihood vs epoch, per arm."""
    lang = summary.language
    assert lang is not None
    label_of = _arm_labels(summary)
    confidence = f"{lang.confidence:.0%}"
    dataset = _name(summary, lang.dataset)  # type: ignore[arg-type]
    blocks: list[Any] = []
    if lang.verdicts:
        blocks.append(BulletList([v.sentence for v in lang.verdicts]))
    elif lang.missing_base:
        blocks.append(Paragraph("The base model's language scores are missing (base/language.jsonl): no change can "
                                "be computed; rerun the study to measure them."))
    else:
        blocks.append(Paragraph("No fine-tuned epoch has language scores yet."))
    blocks.append(Figure("language", line_plot(language_panels(lang.curves, label_of),
                                               title=f"Language without images ({dataset} set)",
                                               colours=colours, ncols=2),
                         "Left: perplexity of held-out prose (never trained on), exp of the mean per-token negative "
                         "log-likelihood. Right: mean per-token log-likelihood of the text set's reference answers "
                         "after its prompts, through the chat template. Teacher-forced, no generation, no judge; "
                         f"{confidence} percentile bootstrap intervals over texts / answers; epoch 0 = base model."))
    rows = [[label_of.get(folder, folder), str(p["epoch"]), *language_table_cells(p)]
            for folder, curve in lang.curves.items() for p in curve]
    blocks.append(Table(["arm", "epoch", *LANGUAGE_COLUMNS], rows,
                        f"Text accuracy: the judged answers on {dataset} ({confidence} "
                        "Wilson interval). "
                        "Log-likelihood in nats per answer token. Changes are epoch - base model on the same "
                        f"answers and texts, with {confidence} paired bootstrap intervals; forgetting shows as "
                        "log-likelihood down and perplexity up."))
    return Section("Language forgetting (text set)", blocks)


def _class_subset_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    ft = _name(summary, summary.fine_tuning_set)
    panels = [LinePanel("held-in classes", [], ylabel="accuracy", xlabel="epoch", ylim=SHARE_RANGE, integer_x=True),
              LinePanel("held-out classes", [], ylabel="accuracy", xlabel="epoch", ylim=SHARE_RANGE, integer_x=True),
              LinePanel("held-out: share on one class", [], ylabel="share of held-out samples", xlabel="epoch",
                        ylim=SHARE_RANGE, integer_x=True)]
    rows = []
    for arm in summary.arms:
        subset = arm.class_subset
        if not subset:
            continue
        pts = subset.points
        panels[0].series.append(_series(arm.name, pts, lambda p: p.held_in_accuracy))
        panels[1].series.append(_series(arm.name, pts, lambda p: p.held_out_accuracy))
        panels[2].series.append(_series(arm.name, pts, lambda p: p.held_out_top1_share))
        last = pts[-1]
        rows.append([arm.folder, str(last.epoch), _format(last.held_in_accuracy), _format(last.held_out_accuracy),
                     f"{_format(last.held_out_top1_share)} ({last.held_out_top1_class})",
                     _format(last.held_out_as_held_in), "yes" if subset.collapsed else "no"])
    blocks: list[Any] = [
        Paragraph(f"Fine-tuned on classes {summary.classes} of {ft} only; accuracy on the fine-tuning set split into "
                  "the held-in classes and the held-out ones."),
        Figure("class_subset", line_plot(panels, title=f"Class-subset fine-tuning on {ft}", colours=colours),
               f"{summary.confidence:.0%} Wilson intervals. Right: share of all held-out samples answered with the "
               "single most common class (EMT's minority collapse)."),
        Table(["arm", "last epoch", "held-in accuracy", "held-out accuracy", "held-out share on one class (class)",
               "held-out answered with a held-in class", "collapsed"], rows,
              next((a.class_subset.collapse_rule for a in summary.arms if a.class_subset), "")),
    ]
    return Section("Class-subset fine-tuning", blocks)


def _confusion_section(summary: EmtSummary) -> Section:
    blocks: list[Any] = []
    for arm in summary.arms:
        for c in arm.confusion:
            panels = [confusion_panel(c.before, c.classes, "base model (epoch 0)"),
                      confusion_panel(c.after, c.classes, f"{arm.folder} epoch {c.after_epoch}")]
            if not panels[0].row_labels and not panels[1].row_labels:
                continue
            panels = [p if p.row_labels else _empty_panel(p.title) for p in panels]
            name = figure_name(f"confusion-{arm.folder}-{c.dataset}")
            label = _name(summary, c.dataset)
            png = heatmap(panels, title=f"{label} ({c.role}): before and after fine-tuning",
                          colorbar_label="share of the true class")
            blocks.append(Figure(name, png, f"{label}, {c.role}: rows are true classes, columns the class "
                                            "the answer named (<none>: no class); cells count samples, colour is "
                                            "the row share."))
    return Section("Confusion matrices", blocks)


def _alignment_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    datasets = [d for d in summary.datasets if any(arm.alignment.get(d) for arm in summary.arms)]
    if not datasets:
        return Section("Visual-text alignment", [])
    cos_panels, top_panels = [], []
    for d in datasets:
        cos = LinePanel(_name(summary, d), [], ylabel="cosine(image, true class name)", xlabel="epoch",
                        integer_x=True)
        top = LinePanel(_name(summary, d), [], ylabel="best-aligned name is true", xlabel="epoch", ylim=SHARE_RANGE,
                        integer_x=True)
        for arm in summary.arms:
            pts = arm.alignment.get(d) or []
            if pts:
                cos.series.append(Series(arm.name, [p.epoch for p in pts], [p.cosine_true for p in pts]))
                top.series.append(_series(arm.name, pts, lambda p: p.top1))
        cos_panels.append(cos)
        top_panels.append(top)
    fig = Figure("alignment", line_plot(cos_panels + top_panels, title="Visual-text alignment vs epoch",
                                        ncols=len(datasets), colours=colours),
                 "Mean projected image token vs the language model's embedding of each class name. Top: mean cosine "
                 "with the true class (a mean over images, stored without per-image values, so no interval). "
                 f"Bottom: share of images whose best-aligned name is the true class, {summary.confidence:.0%} "
                 "Wilson intervals.")
    return Section("Visual-text alignment", [fig])


def _training_section(summary: EmtSummary, colours: dict[str, str]) -> Section:
    series = []
    rows = []
    for arm in summary.arms:
        loss = arm.loss
        if loss:
            smooth = len(loss.loss) > SMOOTH_ABOVE
            series.append(Series(arm.name, loss.epoch, loss.loss, marker="" if smooth else "o",
                                 emphasis=not smooth))
            if smooth:
                series.append(Series(arm.name, loss.epoch, moving_average(loss.loss), marker=""))
        t = arm.train
        rows.append([arm.folder, arm.method, str(t.global_step) if t else "-", str(t.epochs_done) if t else "-",
                     f"{t.trainable_parameters:,} of {t.total_parameters:,}"
                     if t and t.trainable_parameters is not None and t.total_parameters else "-",
                     format_number(t.final_loss if t else None, 4), format_number(t.seconds if t else None, 0)])
    blocks: list[Any] = []
    if series:
        blocks.append(Figure("loss", line_plot([LinePanel("", series, ylabel="loss",
                                                          xlabel="epoch")],
                                               title="Training loss", colours=colours),
                             "Loss per optimizer step against (fractional) epoch"
                             + ("; faint: raw steps, solid: moving average." if any(not s.emphasis for s in series)
                                else ".")))
    blocks.append(Table(["arm", "method", "steps", "epochs", "trainable parameters", "final loss", "seconds"], rows))
    return Section("Training", blocks)


def _per_epoch_section(summary: EmtSummary) -> Section:
    rows = []
    for arm in summary.arms:
        for d in summary.datasets:
            for p in arm.curves[d]:
                top = _format(p.top1_share)
                rows.append([arm.folder, _name(summary, d), str(p.epoch), str(p.n),
                             _format(p.accuracy),
                             _format(p.leak_rate) if d != summary.fine_tuning_set else "-",
                             _format(p.no_class_rate),
                             f"{top} ({p.top1_class})" if p.top1_class is not None else top,
                             _format(p.normalised_entropy), f"{p.unjudged} / {p.skipped}"])
    return Section("All per-epoch numbers", [Table(
        ["arm", "dataset", "epoch", "n", "accuracy", "label leak", "no class", "top-1 share (class)",
         "normalised entropy", "unjudged / skipped"], rows,
        f"{summary.confidence:.0%} Wilson intervals (entropy: bootstrap). Epoch 0 is the base model, the same in "
        "every arm.")])


def _method_section(summary: EmtSummary) -> Section:
    items = [
        "Every figure is recomputed from the judged records in the run folder (samples.jsonl); skipped samples and "
        "judge failures are left out and counted (unjudged / skipped).",
        "Comparisons pair the same sample ids (exact McNemar test; Newcombe interval for the paired difference).",
        "Label leak: the answer names a class of the fine-tuning set. Sets where a correct answer already does "
        "(shared labels) are left out of the leak claim.",
    ]
    items += summary.notes
    if summary.missing_arms:
        items.append(f"Arms configured but not started: {', '.join(summary.missing_arms)}.")
    return Section("Method and notes", [BulletList(items)])


# ------------------------------------------------------------------------------------------------- helpers


def _format(e: Estimate | None) -> str:
    """An estimate as "value [low, high]", "-" when there is none (as metrics.json holds it)."""
    return format_estimate(e.to_dict() if e is not None else None)


def _name(summary: EmtSummary, dataset: str) -> str:
    return summary.names.get(dataset, dataset)


def _dataset_label(summary: EmtSummary, dataset: str) -> str:
    name = _name(summary, dataset)
    return f"{name} (fine-tuning set)" if dataset == summary.fine_tuning_set else name


def _arm_labels(summary: EmtSummary) -> dict[str, str]:
    """Each arm folder's label on the page: the arm's name, or its folder when several seeds make names ambiguous."""
    multi = len(summary.seeds) > 1
    return {a.folder: (a.folder if multi else a.name) for a in summary.arms}


def _series(label: str, points: Sequence[P], get: Callable[[P], Estimate | None]) -> Series:
    """A line through the points' estimates (``get``), epoch on x, with the estimates' intervals as bars."""
    estimates = [get(p) for p in points]
    shown = [e.to_dict() if e is not None else None for e in estimates]
    return Series(label, [p.epoch for p in points], [e["value"] if e else None for e in shown],  # type: ignore
                  [e["low"] if e else None for e in shown], [e["high"] if e else None for e in shown])


def _curve_panels(summary: EmtSummary, get: Figures, datasets: Sequence[str], ylabel: str,
                  ylim: tuple[float, float] | None,
                  baselines: dict[str, dict[str, Baseline]] | None = None) -> list[LinePanel]:
    """One panel per dataset, one line per arm (per method, averaged over seeds, when there are several seeds)."""
    multi = len(summary.seeds) > 1
    panels = []
    for d in datasets:
        series: list[Series] = []
        if multi:
            for method in dict.fromkeys(a.name for a in summary.arms):
                group = [a for a in summary.arms if a.name == method]
                for arm in group:
                    s = _series(method, arm.curves[d], get)
                    series.append(Series(method, s.x, s.y, emphasis=False, marker=""))
                series.append(_seed_mean_series(method, [a.curves[d] for a in group], get))
        else:
            series = [_series(arm.name, arm.curves[d], get) for arm in summary.arms]
        refs = [ReferenceLine(BASELINE_NAMES.get(kind, kind), b.value, b.low, b.high)
                for kind, b in ((baselines or {}).get(d) or {}).items() if b.value is not None]
        panels.append(LinePanel(_dataset_label(summary, d), series, refs, ylabel=ylabel, xlabel="epoch", ylim=ylim,
                                integer_x=True))
    return panels


def _seed_mean_series(label: str, curves: Sequence[Sequence[EpochFigures]], get: Figures) -> Series:
    epochs = sorted({p.epoch for c in curves for p in c})  # type: ignore[type-var]
    ys, lows, highs = [], [], []
    for e in epochs:
        values = [get(p).to_dict()["value"] for c in curves for p in c  # type: ignore[union-attr]
                  if p.epoch == e and get(p)]
        if not values:
            ys.append(None), lows.append(None), highs.append(None)
            continue
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        ys.append(mean), lows.append(mean - sd), highs.append(mean + sd)
    return Series(label, epochs, ys, lows, highs)


def _seed_text(s: SeedSummary | None) -> str:
    if not s:
        return "-"
    d = s.to_dict()
    sd = "-" if d["std"] is None else format_number(d["std"])
    return f"{format_number(d['mean'])} +/- {sd} [{format_number(d['min'])}, {format_number(d['max'])}]"


def _empty_panel(title: str) -> HeatmapPanel:
    return HeatmapPanel(title + " (no judged samples)", [[None]], [""], [""], [[""]])
