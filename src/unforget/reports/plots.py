"""Plots from plain data, returned as PNG bytes (matplotlib, Agg; no pyplot, so no global figure state).

- `line_plot`: panels of lines with asymmetric error bars (e.g. accuracy vs epoch with Wilson intervals) and
  dashed reference lines (e.g. vision-encoder baselines); one colour per series label across all panels.
- `heatmap` / `confusion_panel`: annotated matrices (confusion matrices, accuracy matrices, sweeps).
- `bar_chart`: grouped bars with error bars.
- `numbered_scatter`: points numbered instead of labelled (the numbers' key goes in a table beside the figure);
  numbers of points that sit together share one label, moved off any other label it would touch.

Legible by construction: cell text takes black or white from the cell's luminance (WCAG contrast), legends take
as many columns as fit inside the figure, long titles wrap, tick labels are horizontal or vertical and shrink to
their cell. :func:`legibility_problems` measures a drawn figure with matplotlib's own text extents (every label
inside the figure, no two labels overlapping, cell text readable on its cell); the tests run it on every plot.

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
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
REFERENCE_STYLES = [("#555555", (0, (5, 3))), ("#999999", (0, (2, 2))), ("#333333", (0, (8, 3, 2, 3)))]
NO_CLASS = "<none>"
OTHER_CLASSES = "other classes"  # the row summing the true classes a large confusion matrix leaves out
OTHER = "other"  # the column summing the predictions outside the kept classes
CONFUSION_CLASSES = 12  # a confusion matrix shows at most this many classes: the most confused ones


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
        ax.set_title(panel.title, fontsize=10, wrap=True)
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
    """Annotated heatmaps side by side, sharing one colour scale (``vmin``/``vmax``; None: from the data).
    Cell text is black or white, whichever reads better on that cell's colour; it shrinks to fit its cell, and is
    left out where even the smallest size would not fit (the colour still shows the value)."""
    if not panels:
        raise ValueError("heatmap needs at least one panel")
    ncols = ncols or min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    biggest = max(max(len(p.row_labels), len(p.col_labels)) for p in panels)
    longest = max((len(str(label)) for p in panels for label in (*p.row_labels, *p.col_labels)), default=1)
    side = min(11.0, max(3.4, 0.42 * biggest + 1.6)) + min(2.0, 0.06 * longest)
    fig = _figure(side * ncols + 0.8, side * nrows * 0.92 + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    matrices = [np.array([[_nan(v) for v in row] for row in p.values], dtype=float).reshape(len(p.row_labels),
                                                                                             len(p.col_labels))
                for p in panels]
    finite = [m[np.isfinite(m)] for m in matrices]
    lo = vmin if vmin is not None else min((float(f.min()) for f in finite if f.size), default=0.0)
    hi = vmax if vmax is not None else max((float(f.max()) for f in finite if f.size), default=1.0)
    image = None
    cells: list[tuple] = []
    for ax, panel, m in zip(axes.flat, panels, matrices):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        # a cell's height in points bounds the tick labels' size, so neighbouring labels never touch
        cell_pt = 72 * side * 0.7 / max(1, len(panel.row_labels), len(panel.col_labels))
        tick_size = max(5.0, min(8.0, 0.75 * cell_pt))
        vertical = max((len(str(c)) for c in panel.col_labels), default=0) > 3 or len(panel.col_labels) > 6
        ax.set_xticks(range(len(panel.col_labels)), [str(c) for c in panel.col_labels], fontsize=tick_size,
                      rotation=90 if vertical else 0)
        ax.set_yticks(range(len(panel.row_labels)), [str(r) for r in panel.row_labels], fontsize=tick_size)
        ax.set_title(panel.title, fontsize=10, wrap=True)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        texts = [[(panel.annotations[r][c] if panel.annotations is not None
                   else ("" if math.isnan(m[r, c]) else f"{m[r, c]:.2f}")) for c in range(m.shape[1])]
                 for r in range(m.shape[0])]
        cells.append((ax, image, m, texts))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=[a for a in axes.flat if a.get_visible()], shrink=0.8)
        bar.set_label(colorbar_label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12, wrap=True)
    if any(t for *_, texts in cells for row in texts for t in row):
        fig.draw_without_rendering()  # last: the cells' size is known once the colour bar and title took theirs
        for ax, image, m, texts in cells:
            _annotate_cells(fig, ax, image, m, texts)
    return _png(fig)


def text_colour_on(background: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with ``background`` (RGB(A) in 0..1), by WCAG relative luminance."""
    lum = relative_luminance(background)
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def relative_luminance(colour: Sequence[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0..1 channels)."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in to_rgba(tuple(colour) if not isinstance(colour, str) else colour)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Sequence[float] | str, b: Sequence[float] | str) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((relative_luminance(to_rgba(a)), relative_luminance(to_rgba(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _annotate_cells(fig: Figure, ax, image: AxesImage, m: np.ndarray, texts: list[list[str]]) -> None:
    """Cell text coloured from its cell, at the largest size (7 pt down to 5) at which the longest text fits a cell;
    none when none fits."""
    if not any(t for row in texts for t in row):
        return
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)  # as laid out by the caller's draw_without_rendering
    cell_w, cell_h = box.width / max(1, m.shape[1]), box.height / max(1, m.shape[0])
    longest = max((t for row in texts for t in row), key=len)
    size = 7.0
    while size >= 5.0:
        probe = Text(0, 0, longest, fontsize=size, figure=fig)
        extent = probe.get_window_extent(renderer)
        if extent.width <= 0.92 * cell_w and extent.height <= 0.9 * cell_h:
            break
        size -= 0.5
    if size < 5.0:
        return
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if texts[r][c]:
                cell = (1.0, 1.0, 1.0, 1.0) if math.isnan(m[r, c]) else image.cmap(image.norm(m[r, c]))
                ax.text(c, r, texts[r][c], ha="center", va="center", fontsize=size, color=text_colour_on(cell))


def confusion_panel(confusion: Mapping[str, Mapping[str, int]], classes: Sequence[str], title: str,
                    max_classes: int = CONFUSION_CLASSES) -> HeatmapPanel:
    """Rows: true class; columns: predicted class, plus ``<none>`` (the answer named no class) when it occurs.
    Colour is the row share, the cell text the count. Past ``max_classes`` only the most confused classes stay (most
    errors made or received): the other true classes are summed into an ``other classes`` row, the predictions of
    the other classes into an ``other`` column, so every count is still in the matrix."""
    seen = list(classes) + sorted({c for c in confusion if c not in classes}
                                  | {p for row in confusion.values() for p in row if p not in classes and p != NO_CLASS})
    rows = [c for c in seen if c in confusion]
    if len(set(rows) | {p for c in rows for p in confusion[c] if p != NO_CLASS}) <= max_classes:
        kept = [c for c in seen if c in rows or any(c in confusion[r] for r in rows)]
        summed_rows: list[str] = []
    else:
        errors = {c: 0 for c in seen}
        for true, counts in confusion.items():
            for p, v in counts.items():
                if p != true:
                    errors[true] = errors.get(true, 0) + v
                    if p != NO_CLASS:
                        errors[p] = errors.get(p, 0) + v
        top = set(sorted(seen, key=lambda c: (-errors.get(c, 0), seen.index(c)))[:max_classes])
        kept = [c for c in seen if c in top]
        summed_rows = [c for c in rows if c not in top]
    shown_rows = [c for c in rows if c in kept]
    cols = kept
    everyone = [*shown_rows, *summed_rows]
    other = any(p not in cols and p != NO_CLASS for c in everyone for p in confusion[c])
    none = any(NO_CLASS in confusion[c] for c in everyone)
    col_labels = cols + ([OTHER] if other else []) + ([NO_CLASS] if none else [])
    values, notes = [], []

    def add_row(counts: Mapping[str, int]) -> None:
        total = sum(counts.values()) or 1
        row = [counts.get(c, 0) for c in cols]
        if other:
            row.append(sum(v for p, v in counts.items() if p not in cols and p != NO_CLASS))
        if none:
            row.append(counts.get(NO_CLASS, 0))
        values.append([v / total for v in row])
        notes.append([str(v) if v else "" for v in row])

    for r in shown_rows:
        add_row(confusion[r])
    row_labels = list(shown_rows)
    if summed_rows:
        summed: dict[str, int] = {}
        for r in summed_rows:
            for p, v in confusion[r].items():
                summed[p] = summed.get(p, 0) + v
        add_row(summed)
        row_labels.append(f"{OTHER_CLASSES} ({len(summed_rows)})")
    return HeatmapPanel(title, values, row_labels, col_labels, notes, xlabel="predicted", ylabel="true class")


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
    # horizontal while the names fit their group (about 7 characters per inch of group at 8 pt), else vertical
    room = fig.get_figwidth() / max(1, len(categories)) * 7
    ax.set_xticks(range(len(categories)), list(categories), fontsize=8,
                  rotation=90 if max((len(c) for c in categories), default=0) > room else 0)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, axis="y", alpha=0.3)
    _finish(fig, title, handles)
    return _png(fig)


@dataclass
class ScatterPoint:
    """One numbered point; ``group`` picks its colour and legend entry, ``marker`` its shape."""

    number: int
    x: float | None
    y: float | None
    group: str
    marker: str = "o"


@dataclass
class ScatterPanel:
    title: str
    points: list[ScatterPoint]
    xlabel: str = ""
    ylabel: str = ""
    front: list[int] = field(default_factory=list)  # numbers of the points joined by a line, in order
    front_label: str = "Pareto front"


def numbered_scatter(panels: Sequence[ScatterPanel], *, title: str = "",
                     panel_size: tuple[float, float] = (5.4, 4.4)) -> bytes:
    """Points marked by number (their key is a table beside the figure, never text in the plot). Points that sit
    within a few pixels of each other share one label ("3, 4, 7"); each label is tried at eight places around its
    point and takes the first that touches no other label and stays inside the axes. The front, when given, is a
    solid dark line under the markers with its own legend entry."""
    if not panels:
        raise ValueError("numbered_scatter needs at least one panel")
    colours = colour_map([p.group for panel in panels for p in panel.points])
    fig = _figure(panel_size[0] * len(panels), panel_size[1] + 0.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    handles: dict[str, object] = {}
    placed: list[tuple[object, list]] = []
    for ax, panel in zip(axes, panels):
        pts = [p for p in panel.points if _finite(p.x) and _finite(p.y)]
        for p in pts:
            handles.setdefault(p.group, ax.scatter([p.x], [p.y], color=colours[p.group], marker=p.marker, s=40,
                                                   zorder=3, edgecolors="white", linewidths=0.6))
        by_number = {p.number: p for p in pts}
        front = [by_number[n] for n in panel.front if n in by_number]
        if len(front) > 1:
            handles[panel.front_label] = ax.plot([p.x for p in front], [p.y for p in front], color="#111111",
                                                 linewidth=2.0, zorder=2, alpha=0.85)[0]
        ax.axhline(0, color="#bbbbbb", linewidth=0.8, zorder=1)
        ax.axvline(0, color="#bbbbbb", linewidth=0.8, zorder=1)
        ax.set_title(panel.title, fontsize=10, wrap=True)
        ax.set_xlabel(panel.xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if pts:
            _pad_limits(ax, [p.x for p in pts], [p.y for p in pts])
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#888888")
        placed.append((ax, pts))
    _finish(fig, title, handles)
    fig.draw_without_rendering()  # the final axes sizes, for the pixel distances below
    for ax, pts in placed:
        _place_numbers(fig, ax, pts)
    return _png(fig)


def _pad_limits(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Data limits with room for the number labels around the outermost points (and 0 always in view)."""
    for values, setter in ((xs, ax.set_xlim), (ys, ax.set_ylim)):
        lo, hi = min(min(values), 0.0), max(max(values), 0.0)
        pad = 0.15 * (hi - lo) or 0.05
        setter(lo - pad, hi + pad)


def _place_numbers(fig: Figure, ax, pts: Sequence[ScatterPoint], near_px: float = 9.0) -> None:
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    clusters: list[list[ScatterPoint]] = []
    for p in sorted(pts, key=lambda p: p.number):
        where = to_px((p.x, p.y))
        home = next((c for c in clusters if np.hypot(*(to_px((c[0].x, c[0].y)) - where)) <= near_px), None)
        if home is None:
            clusters.append([p])
        else:
            home.append(p)
    frame = ax.get_window_extent(renderer)
    taken: list = []
    offsets = [(6, 5), (6, -12), (-6, 5), (-6, -12), (0, 10), (0, -16), (12, -3), (-12, -3)]
    for cluster in clusters:
        label = ", ".join(str(p.number) for p in cluster)
        anchor = (cluster[0].x, cluster[0].y)
        for ring in range(1, 7):
            done = False
            for dx, dy in offsets:
                text = ax.annotate(label, anchor, xytext=(dx * ring, dy * ring), textcoords="offset points",
                                   fontsize=7, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                   color="#111111", zorder=4,
                                   bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                                   arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.6} if ring > 1 else None)
                box = Text.get_window_extent(text, renderer)  # the label, not its leader line
                inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
                if inside and not any(box.overlaps(other) for other in taken):
                    taken.append(box)
                    done = True
                    break
                text.remove()
            if done:
                break
        else:  # nowhere free: the last place tried, still inside the figure (the table lists every number)
            text = ax.annotate(label, anchor, xytext=(6, 5), textcoords="offset points", fontsize=7, zorder=4)
            taken.append(Text.get_window_extent(text, renderer))


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, title: str, handles: Mapping[str, object]) -> None:
    """The title (wrapped to the figure) and one legend under the panels, in as many columns as fit its width."""
    if title:
        fig.suptitle(title, fontsize=12, wrap=True)
    if not handles:
        return
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    for ncols in range(min(len(handles), 4), 0, -1):
        legend = fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=ncols,
                            fontsize=8, frameon=False)
        if legend.get_window_extent(renderer).width <= 0.96 * width or ncols == 1:
            break
        legend.remove()
    extent = legend.get_window_extent(renderer).width
    if extent > 0.96 * width:  # one column is still too wide: the figure grows to hold it
        fig.set_figwidth(extent / fig.dpi / 0.9)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


# ------------------------------------------------------------------------------------------------ legibility


def legibility_problems(fig: Figure, min_contrast: float = 4.5) -> list[str]:
    """What a reader could not read in ``fig``, measured on the drawn figure with matplotlib's own text extents:
    a label (any visible, non-empty text) reaching outside the figure, two labels overlapping, or text on a heatmap
    cell with a WCAG contrast ratio under ``min_contrast`` against that cell. Empty when all is legible."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # the layout engine runs, text wraps: the extents below are those of the saved image
    frame = fig.bbox
    texts = [t for t in _texts(fig, renderer) if t.get_visible() and t.get_text().strip()]
    boxes = [(t, Text.get_window_extent(t, renderer)) for t in texts]  # the text itself, not an annotation's arrow
    problems: list[str] = []
    for t, box in boxes:
        if box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1 or box.y0 < frame.y0 - 1 or box.y1 > frame.y1 + 1:
            problems.append(f"{t.get_text()!r} leaves the figure ({box.x0:.0f}..{box.x1:.0f} x {box.y0:.0f}.."
                            f"{box.y1:.0f}, figure {frame.width:.0f} x {frame.height:.0f} px)")
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_w > 0.5 and overlap_h > 0.5:
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    for ax in fig.axes:
        images = [im for im in ax.get_images() if isinstance(im, AxesImage)]
        if not images:
            continue
        image = images[0]
        data = np.ma.masked_invalid(np.asarray(image.get_array(), dtype=float))
        for t in ax.texts:
            if not (t.get_visible() and t.get_text().strip()):
                continue
            x, y = t.get_position()
            r, c = int(round(y)), int(round(x))
            if 0 <= r < data.shape[0] and 0 <= c < data.shape[1] and not np.ma.is_masked(data[r, c]):
                cell = image.cmap(image.norm(float(data[r, c])))
                ratio = contrast_ratio(cell, t.get_color())
                if ratio < min_contrast:
                    problems.append(f"{t.get_text()!r} in {t.get_color()} on a cell of colour "
                                    f"{tuple(round(v, 2) for v in cell[:3])}: contrast {ratio:.1f} < {min_contrast}")
    return problems


def _texts(fig: Figure, renderer) -> list[Text]:
    """Every text the saved figure shows: titles, axis and tick labels of the ticks drawn, cell text, annotations,
    legends (tick labels of ticks outside the view are not drawn, so they are not counted)."""
    out: list[Text] = [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    out += list(fig.texts)
    for legend in fig.legends:
        out += legend.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_visible():
                for tick in axis._update_ticks():
                    out += [label for label in (tick.label1, tick.label2) if label.get_visible()]
        out += list(ax.texts)
        if ax.get_legend() is not None:
            out += ax.get_legend().get_texts()
    return list({id(t): t for t in out}.values())  # the suptitle is also among fig.texts
