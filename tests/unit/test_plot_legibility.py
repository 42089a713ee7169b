"""Every plot a reader sees can be read: measured on the drawn figure with matplotlib's own text extents
(``renderer``, ``Text.get_window_extent``): no label leaves the figure, no two labels overlap, and text on a heatmap
cell has WCAG contrast >= 4.5 against it. Checked on every plot of every report kind (tests/report_folders.py: run
folders made to crowd their plots the way real runs did), and on the cases that were unreadable before.
"""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from tests.report_folders import CLASSES_64, KINDS, confusion_64, every_kind
from unforget.reports import plots
from unforget.reports.plots import (
    HeatmapPanel,
    LinePanel,
    ReferenceLine,
    ScatterPanel,
    ScatterPoint,
    Series,
    confusion_panel,
    heatmap,
    legibility_problems,
    line_plot,
    numbered_scatter,
)
from unforget.studies.report import write_run_report


@pytest.fixture()
def drawn(monkeypatch) -> list[Figure]:
    """Every figure the plot functions save, kept for measuring."""
    figures: list[Figure] = []
    save = plots._png

    def keep(fig: Figure) -> bytes:
        figures.append(fig)
        return save(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return figures


def _wcag_luminance(rgb) -> float:
    # WCAG 2.x relative luminance, written out from its definition
    # (https://www.w3.org/TR/WCAG21/#dfn-relative-luminance)
    def channel(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# ------------------------------------------------------------------------------------------------ the checker


def test_the_checker_sees_overlap_clipping_and_poor_contrast():
    """The measure itself: a label half outside, two labels on one spot, white on a pale cell are all named."""
    fig = Figure(figsize=(3, 2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "another label", transform=ax.transAxes)
    fig.text(0.9, 0.5, "cut off at the edge")
    problems = legibility_problems(fig)
    assert any("'one label' overlaps 'another label'" in p for p in problems)
    assert any("'cut off at the edge' leaves the figure" in p for p in problems)
    fig = Figure(figsize=(3, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow([[0.1]], cmap="Blues", vmin=0, vmax=1)
    ax.text(0, 0, "0.10", color="white", ha="center", va="center")
    assert any("contrast" in p for p in legibility_problems(fig))


# ------------------------------------------------------------------------------------ the cases that failed


def test_pale_diverging_cell_gets_black_text(drawn):
    """The 2x2 sweep heatmap wrote white "+0.18" on a pale cell (the rule was "top 40% of the scale is dark",
    wrong for a diverging map, whose middle is pale and both ends dark)."""
    panel = HeatmapPanel("OOD image", [[0.18, -0.29], [0.0, 0.3]], ["lora", "full"], ["1e-05", "0.001"],
                         [["+0.18", "-0.29"], ["+0.00", "+0.30"]])
    heatmap([panel], vmin=-0.3, vmax=0.3, cmap="RdBu_r")
    fig = drawn[-1]
    texts = {t.get_text(): t for t in fig.axes[0].texts}
    cell = fig.axes[0].get_images()[0].cmap(0.8)  # +0.18 on [-0.3, 0.3]
    lum = _wcag_luminance(cell)
    black_contrast, white_contrast = (lum + 0.05) / 0.05, 1.05 / (lum + 0.05)
    assert black_contrast > white_contrast  # the reference says black reads better on this cell
    assert to_rgba(texts["+0.18"].get_color()) == to_rgba("black")
    assert to_rgba(texts["+0.30"].get_color()) == to_rgba("white")  # the dark red end
    assert to_rgba(texts["-0.29"].get_color()) == to_rgba("white")  # the dark blue end
    assert legibility_problems(fig) == []


def test_points_at_one_place_share_a_label_and_no_label_overlaps(drawn):
    """The 2x2 Pareto plot: every run's label at the origin, piled on each other."""
    points = [ScatterPoint(i, 0.0, 0.0, "lora" if i % 2 else "projector") for i in range(1, 8)]
    points += [ScatterPoint(8, 0.001, 0.002, "full"), ScatterPoint(9, 0.18, 0.18, "full")]
    numbered_scatter([ScatterPanel("", points, "forgetting", "gain", front=[1, 9])], title="Target gain vs forgetting")
    fig = drawn[-1]
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    assert labels == ["1, 2, 3, 4, 5, 6, 7, 8", "9"]  # within a few pixels: one label
    assert legibility_problems(fig) == []
    # the front is a line of its own in the legend, darker than the grid
    assert "Pareto front" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_a_wide_legend_stays_inside_a_one_panel_figure(drawn):
    """The tailor study's "Retention vs reach": four legend entries in one row, wider than the 4.2-inch figure."""
    series = [Series(name, [10, 50], [99, 97]) for name in ("model-tailor", "dare-ties-merge", "fine-tuned", "base")]
    line_plot([LinePanel("Model Tailor, single target (scenes-vqa)", series, [ReferenceLine("keep 99%", 99)])],
              title="Retention vs reach", dodge=0.0)
    assert legibility_problems(drawn[-1]) == []


def test_sixty_four_classes_show_the_most_confused_and_sum_the_rest(drawn):
    confusion = confusion_64()
    panel = confusion_panel(confusion, CLASSES_64, "after")
    assert len(panel.row_labels) == plots.CONFUSION_CLASSES + 1 and panel.row_labels[-1].startswith("other classes")
    # every sample is still counted: the kept rows plus the summed row hold them all
    counts = sum(int(v) for row in panel.annotations for v in row if v)
    assert counts == sum(sum(r.values()) for r in confusion.values())
    # the kept classes are those with the most errors (made or received), by a hand count
    errors = {c: 0 for c in CLASSES_64}
    for true, row in confusion.items():
        for p, v in row.items():
            if p != true:
                errors[true] += v
                if p in errors:
                    errors[p] += v
    threshold = sorted(errors.values(), reverse=True)[plots.CONFUSION_CLASSES - 1]
    assert all(errors[c] >= threshold for c in panel.row_labels[:-1])
    heatmap([panel, confusion_panel(confusion, CLASSES_64, "before")], title="cifar100: before and after")
    assert legibility_problems(drawn[-1]) == []


# ------------------------------------------------------------------------------ every plot of every report


def test_every_plot_of_every_report_kind_is_legible(tmp_path, drawn):
    folders = every_kind(tmp_path)
    assert sorted(folders) == sorted(KINDS)
    problems: dict[str, list[str]] = {}
    for kind, folder in folders.items():
        before = len(drawn)
        write_run_report(folder)
        assert len(drawn) > before, f"{kind}: no plot drawn"
        for fig in drawn[before:]:
            title = fig._suptitle.get_text() if fig._suptitle else "(untitled)"
            for problem in legibility_problems(fig):
                problems.setdefault(f"{kind}: {title}", []).append(problem)
    assert problems == {}
