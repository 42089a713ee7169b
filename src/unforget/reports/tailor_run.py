"""The report of a standalone tailoring run (``unforget tailor``): what was grafted or merged, and where.

Inputs (written by :mod:`unforget.tailoring.run`): ``config.yaml`` (the resolved TailorConfig) and ``metrics.json``
(``TailorResult.summary()`` plus the inputs: base, fine-tuned models, calibration sets, format, the written model),
with per-tensor statistics under ``tensors``. Tensors are grouped by their name with the layer index replaced by
``*`` (``model.layers.*.self_attn.q_proj.weight``), so a 7B model's hundreds of tensors read as a few modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_yaml
from ..errors import DataError
from ..runs import CONFIG, METRICS, read_json, read_manifest
from .base import REPORTS, ReportKind
from .document import (
    Figure,
    Paragraph,
    Report,
    ReportFiles,
    Section,
    Table,
    format_number,
    write_report,
)
from .plots import BarSeries, LinePanel, Series, bar_chart, line_plot

STAGES = ("calibrate", "score", "mask", "compensate", "merge", "write")
MAX_BARS = 40  # a bar chart of more modules than this is unreadable: the largest are shown
_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")


@dataclass
class ModuleGroup:
    """Tensors that differ only by their layer index; ``by_layer`` sums per layer."""

    pattern: str
    tensors: int = 0
    numel: int = 0
    changed: int = 0
    overlap: int = 0
    errors_before: list[float] = field(default_factory=list)
    errors_after: list[float] = field(default_factory=list)
    by_layer: dict[int, list[int]] = field(default_factory=dict)  # layer -> [changed, numel]

    @property
    def fraction(self) -> float | None:
        return self.changed / self.numel if self.numel else None


def module_groups(tensors: dict[str, dict[str, Any]]) -> list[ModuleGroup]:
    """Per-tensor statistics summed per module pattern (layer indices as ``*``), in first-seen order."""
    groups: dict[str, ModuleGroup] = {}
    for key, stat in tensors.items():
        pattern = _INDEX.sub("*", key)
        group = groups.setdefault(pattern, ModuleGroup(pattern))
        numel, changed = int(stat.get("numel") or 0), int(stat.get("changed") or 0)
        group.tensors += 1
        group.numel += numel
        group.changed += changed
        group.overlap += int(stat.get("overlap") or 0)
        group.errors_before += [float(e) for e in stat.get("error_before") or [] if e is not None]
        group.errors_after += [float(e) for e in stat.get("error_after") or [] if e is not None]
        layers = _INDEX.findall(key)
        if len(layers) == 1:
            cell = group.by_layer.setdefault(int(layers[0]), [0, 0])
            cell[0] += changed
            cell[1] += numel
    return list(groups.values())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _short_labels(patterns: list[str]) -> dict[str, str]:
    """Patterns without the dotted prefix they all share (``model.layers.*.``), for legends."""
    if len(patterns) < 2:
        return {p: p for p in patterns}
    split = [p.split(".") for p in patterns]
    common = 0
    while all(len(s) > common + 1 for s in split) and len({s[common] for s in split}) == 1:
        common += 1
    return {p: ".".join(s[common:]) for p, s in zip(patterns, split)}


def _module_table(groups: list[ModuleGroup]) -> Table:
    rows = [[g.pattern, str(g.tensors), f"{g.numel:,}", f"{g.changed:,}",
             f"{100 * g.fraction:.2f}%" if g.fraction is not None else "-", f"{g.overlap:,}",
             format_number(_mean(g.errors_before), 4), format_number(_mean(g.errors_after), 4)] for g in groups]
    return Table(["module", "tensors", "entries", "changed", "changed share", "overlap", "output error before",
                  "output error after"], rows,
                 "Per module (tensors differing only by layer index summed): entries the patch sets, entries chosen "
                 "by several fine-tuned models (overlap), and the mean relative layer-output error ||(W - W_ft) X||^2 "
                 "/ ||W_ft X||^2 on the calibration inputs without and with compensation ('-': not compensated).")


def _module_figure(groups: list[ModuleGroup]) -> Figure | None:
    layered = [g for g in groups if len(g.by_layer) > 1]
    if layered:
        labels = _short_labels([g.pattern for g in layered])
        series = []
        for g in layered:
            layers = sorted(g.by_layer)
            series.append(Series(labels[g.pattern], layers,
                                 [100 * g.by_layer[i][0] / g.by_layer[i][1] if g.by_layer[i][1] else None
                                  for i in layers], marker="o" if len(layers) <= 40 else ""))
        png = line_plot([LinePanel("", series, ylabel="changed entries, %", xlabel="layer", integer_x=True)],
                        title="Changed share per layer", panel_size=(7.5, 3.6))
        return Figure("changed-per-layer", png, "Share of each module's entries the patch sets, per layer (one line "
                                                "per module).")
    shown = sorted((g for g in groups if g.fraction is not None), key=lambda g: -g.numel)[:MAX_BARS]
    if not shown:
        return None
    labels = _short_labels([g.pattern for g in shown])
    png = bar_chart([labels[g.pattern] for g in shown], [BarSeries("changed share", [100 * g.fraction for g in shown])],
                    title="Changed share per module", ylabel="changed entries, %")
    return Figure("changed-per-module", png, "Share of each module's entries the patch sets"
                  + (f" (the {MAX_BARS} largest modules)." if len(groups) > MAX_BARS else "."))


def build_tailor_run_report(run_dir: str | Path) -> Report:
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise DataError(f"{run_dir} has no {METRICS}: the tailoring run did not finish (it writes metrics.json "
                        "last); rerun the same `unforget tailor --out` command to complete it")
    summary = read_json(run_dir / METRICS)
    config = read_yaml(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else {}
    options = summary.get("options") or {}
    sparsity = options.get("sparsity", config.get("sparsity"))
    method = str(summary.get("method") or config.get("method"))
    finetuned = [str(f) for f in summary.get("finetuned") or config.get("finetuned") or []]
    considered, changed = summary.get("considered"), summary.get("changed")
    fraction = summary.get("changed_fraction")
    facts = [("run folder", str(run_dir)), ("base model", str(summary.get("base") or config.get("base"))),
             ("fine-tuned", ", ".join(finetuned) or "-"), ("method", method),
             ("sparsity", f"{100 * float(sparsity):g}% of the considered entries" if sparsity is not None
              else "- (the method merges whole task vectors)"),
             ("changed", f"{changed:,} of {considered:,} considered entries ({100 * fraction:.4f}%)"
              if changed is not None and considered and fraction is not None else "-"),
             ("calibration", ", ".join(summary.get("calibration") or []) or "none"),
             ("written", f"{summary.get('model')} ({summary.get('format', config.get('format'))})"),
             ("base fingerprint", str(summary.get("base_fingerprint")))]
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.git_sha:
        facts.append(("git sha", manifest.git_sha))
    report = Report(title=f"Tailoring: {method}" + (f" at {100 * float(sparsity):g}%" if sparsity is not None
                                                    else ""), facts=facts)
    other = {k: v for k, v in options.items() if k != "sparsity"}
    option_rows = [[k, str(v)] for k, v in other.items()]
    blocks: list[Any] = [Table(["option", "value"], option_rows, "The method's options as resolved (its defaults "
                                                                 "included).") if option_rows
                         else Paragraph("The method ran with no options besides the sparsity.")]
    seconds = summary.get("seconds") or {}
    blocks.append(Table([*[f"{s} (s)" for s in STAGES], "total (s)"],
                        [[*[format_number(seconds.get(s), 2) for s in STAGES],
                          format_number(sum(float(v) for v in seconds.values() if v is not None), 2)]],
                        "Wall-clock seconds per stage."))
    report.sections.append(Section("Method", blocks))
    tensors = summary.get("tensors") or {}
    if tensors:
        groups = module_groups(tensors)
        module_blocks: list[Any] = [_module_table(groups)]
        figure = _module_figure(groups)
        if figure is not None:
            module_blocks.append(figure)
        report.sections.append(Section("Per module", module_blocks))
    else:
        report.sections.append(Section("Per module", [Paragraph("metrics.json holds no per-tensor statistics.")]))
    return report


def write_tailor_run_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ into an `unforget tailor` output folder."""
    return write_report(build_tailor_run_report(run_dir), run_dir)


def is_tailor_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "finetuned" in config and "method" in config and "base" in config and "targets" not in config


REPORTS.register(ReportKind(
    "tailor", write_tailor_run_report, is_tailor_run,
    "tailoring run: method, sparsity, changed share, per-module statistics"))
