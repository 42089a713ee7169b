"""Plots from plain data, returned as PNG bytes (matplotlib, Agg; no pyplot, so no global figure state).

- `line_plot`: panels of lines with asymmetric error bars (e.g. accuracy vs epoch with Wilson intervals) and
  dashed reference lines (e.g. vision-encoder baselines); one colour per series label across all panels.
- `heatmap` / `confusion_panel`: annotated matrices (confusion matrices, accuracy matrices, sweeps).
- `bar_chart`: grouped bars with error bars.

Missing values (None / NaN) leave gaps instead of failing, so a curve with an unfinished epoch still plots.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # reports are written on headless machines

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
REFERENCE_STYLES = [("#555555", (0, (5, 3))), ("#999999", (0, (2, 2))), ("#333333", (0, (8, 3, 2, 3)))]
NO_CLASS = "<none>"


@dataclass
class Series:
    """One line: ``y[i]`` at ``x[i]`` with optional interval ``[low[i], high[i]]`` drawn as error bars."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None
    linestyle: str = "-"
    marker: str = "o"
    emphasis: bool = True  # False: thin and faint (raw values under a smoothed line, single seeds under a mean)


@dataclass
class ReferenceLine:
    """A horizontal dashed line (a baseline), with its interval as a faint band when given."""

    label: str
    y: float
    low: float | None = None
    high: float | None = None


@dataclass
class LinePanel:
    title: str
    series: list[Series]
    reference_lines: list[ReferenceLine] = field(default_factory=list)
    ylabel: str = ""
    xlabel: str = ""
    ylim: tuple[float, float] | None = None
    integer_x: bool = False  # ticks only at whole numbers (epochs)


@dataclass
class HeatmapPanel:
    """``values[r][c]`` coloured; ``annotations[r][c]`` written in the cell (default: the value, 2 decimals)."""

    title: str
    values: Sequence[Sequence[float | None]]
    row_labels: Sequence[str]
    col_labels: Sequence[str]
    annotations: Sequence[Sequence[str]] | None = None
    xlabel: str = ""
    ylabel: str = ""


@dataclass
class BarSeries:
    label: str
    values: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None


def moving_average(values: Sequence[float | None], window: int = 0) -> list[float | None]:
    """Trailing mean over ``window`` values (default: a 25th of the series, at least 3); missing values skipped."""
    vals = list(values)
    window = window or max(3, len(vals) // 25)
    out: list[float | None] = []
    for i in range(len(vals)):
        chunk = [v for v in vals[max(0, i - window + 1): i + 1] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def colour_map(labels: Sequence[str]) -> dict[str, str]:
    """A stable colour per label (first seen, first colour), shared by every panel of a figure."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = PALETTE[len(out) % len(PALETTE)]
    return out


def line_plot(panels: Sequence[LinePanel], *, title: str = "", ncols: int | None = None,
              colours: Mapping[str, str] | None = None, panel_size: tuple[float, float] = (4.2, 3.2),
              dodge: float = 0.04) -> bytes:
    """Panels in a grid (``ncols`` per row, default up to 3) with one legend below for all of them.
    ``dodge``: sideways offset (in x units) between series with error bars, so overlapping intervals stay visible."""
    if not panels:
        raise ValueError("line_plot needs at least one panel")
    ncols = ncols or min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    colours = dict(colours or colour_map([s.label for p in panels for s in p.series]))
    fig = _figure(panel_size[0] * ncols, panel_size[1] * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles: dict[str, object] = {}
    emphasised: set[str] = set()
    for ax, panel in zip(axes.flat, panels):
        with_bars = [s for s in panel.series if s.low is not None and s.emphasis]
        for s in panel.series:
            colour = colours.setdefault(s.label, PALETTE[len(colours) % len(PALETTE)])
            # error bars of series sharing x values are spread sideways so that none hides another
            shift = (with_bars.index(s) - (len(with_bars) - 1) / 2) * dodge if s in with_bars else 0.0
            handle = _draw_series(ax, s, colour, shift)
            # the legend shows a label's emphasised line when it has one, else its faint one
            if s.emphasis and s.label not in emphasised:
                handles[s.label] = handle
                emphasised.add(s.label)
            elif s.label not in handles:
                handles[s.label] = handle
        for i, ref in enumerate(panel.reference_lines):
            colour, dashes = REFERENCE_STYLES[i % len(REFERENCE_STYLES)]
            handles.setdefault(ref.label, ax.axhline(ref.y, color=colour, linestyle=dashes, linewidth=1.3))
            if ref.low is not None and ref.high is not None:
                ax.axhspan(ref.low, ref.high, color=colour, alpha=0.08, linewidth=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        xs = [float(v) for s in panel.series for v in s.x]
        if xs:
            # the x range comes from the data even where every y is missing (matplotlib would centre on 0)
            span = max(xs) - min(xs)
            # whole-number axes (epochs, steps) get a quarter step; continuous ones (KL) 5% of their own range
            whole = panel.integer_x or all(float(x).is_integer() for x in xs)
            pad = max(0.25, 0.05 * span) if whole else (0.05 * span or 0.05 * abs(max(xs)) or 0.05)
            ax.set_xlim(min(xs) - pad, max(xs) + pad)
        if not any(not math.isnan(_nan(y)) for s in panel.series for y in s.y):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="y", useOffset=False)  # "1e-7+5.96" tick labels are unreadable
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _finish(fig, title, handles)
    return _png(fig)


def _draw_series(ax, s: Series, colour: str, shift: float = 0.0):
    x = [float(v) + shift for v in s.x]
    y = [_nan(v) for v in s.y]
    width, alpha = (1.8, 1.0) if s.emphasis else (0.9, 0.35)
    if s.low is not None and s.high is not None:
        below = [max(0.0, yi - _nan(lo)) if not math.isnan(yi) else math.nan for yi, lo in zip(y, s.low)]
        above = [max(0.0, _nan(hi) - yi) if not math.isnan(yi) else math.nan for yi, hi in zip(y, s.high)]
        container = ax.errorbar(x, y, yerr=[below, above], color=colour, linestyle=s.linestyle, marker=s.marker,
                                markersize=4 if s.emphasis else 2, linewidth=width, alpha=alpha, capsize=3,
                                elinewidth=1)
        return container.lines[0]
    (line,) = ax.plot(x, y, color=colour, linestyle=s.linestyle, marker=s.marker if s.marker else None,
                      markersize=4 if s.emphasis else 2, linewidth=width, alpha=alpha)
    return line


def heatmap(panels: Sequence[HeatmapPanel], *, title: str = "", vmin: float | None = 0.0, vmax: float | None = 1.0,
            cmap: str = "Blues", colorbar_label: str = "", ncols: int | None = None) -> bytes:
    """Annotated heatmaps side by side, sharing one colour scale (``vmin``/``vmax``; None: from the data)."""
    if not panels:
        raise ValueError("heatmap needs at least one panel")
    ncols = ncols or min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    biggest = max(max(len(p.row_labels), len(p.col_labels)) for p in panels)
    side = min(11.0, max(3.4, 0.42 * biggest + 1.6))
    fig = _figure(side * ncols + 0.8, side * nrows * 0.92 + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    matrices = [np.array([[_nan(v) for v in row] for row in p.values], dtype=float).reshape(len(p.row_labels),
                                                                                             len(p.col_labels))
                for p in panels]
    finite = [m[np.isfinite(m)] for m in matrices]
    lo = vmin if vmin is not None else min((float(f.min()) for f in finite if f.size), default=0.0)
    hi = vmax if vmax is not None else max((float(f.max()) for f in finite if f.size), default=1.0)
    image = None
    for ax, panel, m in zip(axes.flat, panels, matrices):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(len(panel.col_labels)), [str(c) for c in panel.col_labels], rotation=45, ha="right",
                      fontsize=8)
        ax.set_yticks(range(len(panel.row_labels)), [str(r) for r in panel.row_labels], fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        if len(panel.row_labels) * len(panel.col_labels) <= 900:
            for r in range(m.shape[0]):
                for c in range(m.shape[1]):
                    text = (panel.annotations[r][c] if panel.annotations is not None
                            else ("" if math.isnan(m[r, c]) else f"{m[r, c]:.2f}"))
                    if text:
                        dark = not math.isnan(m[r, c]) and (m[r, c] - lo) > 0.6 * (hi - lo)
                        ax.text(c, r, text, ha="center", va="center", fontsize=7,
                                color="white" if dark else "black")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=[a for a in axes.flat if a.get_visible()], shrink=0.8)
        bar.set_label(colorbar_label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    return _png(fig)


def confusion_panel(confusion: Mapping[str, Mapping[str, int]], classes: Sequence[str], title: str,
                    max_classes: int = 30) -> HeatmapPanel:
    """Rows: true class; columns: predicted class, plus ``<none>`` (the answer named no class) when it occurs.
    Colour is the row share, the cell text the count. Past ``max_classes`` only the most frequent true classes stay
    (their predictions outside the kept columns are summed into ``other``)."""
    seen = list(classes) + sorted({c for c in confusion if c not in classes}
                                  | {p for row in confusion.values() for p in row if p not in classes and p != NO_CLASS})
    rows = [c for c in seen if c in confusion]
    if len(rows) > max_classes:
        rows = sorted(rows, key=lambda c: -sum(confusion[c].values()))[:max_classes]
        rows = [c for c in seen if c in rows]
    predicted_counts: dict[str, int] = {}
    for c in rows:
        for p, v in confusion[c].items():
            if p not in rows and p != NO_CLASS:
                predicted_counts[p] = predicted_counts.get(p, 0) + v
    extra = sorted(predicted_counts, key=lambda p: -predicted_counts[p])[: max(0, max_classes - len(rows))]
    cols = [c for c in seen if c in rows or c in extra]
    other = any(p not in cols and p != NO_CLASS for c in rows for p in confusion[c])
    none = any(NO_CLASS in confusion[c] for c in rows)
    col_labels = cols + (["other"] if other else []) + ([NO_CLASS] if none else [])
    values, notes = [], []
    for r in rows:
        counts = confusion[r]
        total = sum(counts.values()) or 1
        row = [counts.get(c, 0) for c in cols]
        if other:
            row.append(sum(v for p, v in counts.items() if p not in cols and p != NO_CLASS))
        if none:
            row.append(counts.get(NO_CLASS, 0))
        values.append([v / total for v in row])
        notes.append([str(v) if v else "" for v in row])
    return HeatmapPanel(title, values, rows, col_labels, notes, xlabel="predicted", ylabel="true class")


def bar_chart(categories: Sequence[str], series: Sequence[BarSeries], *, title: str = "", ylabel: str = "",
              xlabel: str = "", ylim: tuple[float, float] | None = None,
              reference_lines: Sequence[ReferenceLine] = ()) -> bytes:
    """Grouped bars: one group per category, one bar per series, error bars from ``low``/``high``."""
    if not series:
        raise ValueError("bar_chart needs at least one series")
    colours = colour_map([s.label for s in series])
    fig = _figure(max(4.5, 0.5 * len(categories) * len(series) + 2.0), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(series)
    handles: dict[str, object] = {}
    for i, s in enumerate(series):
        xs = [k - 0.4 + width * (i + 0.5) for k in range(len(categories))]
        ys = [_nan(v) for v in s.values]
        yerr = None
        if s.low is not None and s.high is not None:
            yerr = [[0.0 if math.isnan(y) else max(0.0, y - _nan(lo)) for y, lo in zip(ys, s.low)],
                    [0.0 if math.isnan(y) else max(0.0, _nan(hi) - y) for y, hi in zip(ys, s.high)]]
        handles[s.label] = ax.bar(xs, ys, width=width * 0.95, color=colours[s.label], yerr=yerr, capsize=3,
                                  error_kw={"elinewidth": 1})
    for i, ref in enumerate(reference_lines):
        colour, dashes = REFERENCE_STYLES[i % len(REFERENCE_STYLES)]
        handles[ref.label] = ax.axhline(ref.y, color=colour, linestyle=dashes, linewidth=1.3)
    ax.set_xticks(range(len(categories)), list(categories), fontsize=8,
                  rotation=30 if max((len(c) for c in categories), default=0) > 8 else 0)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, axis="y", alpha=0.3)
    _finish(fig, title, handles)
    return _png(fig)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, title: str, handles: Mapping[str, object]) -> None:
    if title:
        fig.suptitle(title, fontsize=12)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 4), fontsize=8, frameon=False)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)
