"""The judge-free forgetting probe on the study pages: the summary's points (computed by
:mod:`unforget.studies.probing`) as a scatter and a sentence on how well the probe ranks the measured forgetting.
Used by the EMT, 2x2 and continual reports.
"""

from __future__ import annotations

from typing import Any, Sequence

from .document import format_number, format_p
from .plots import LinePanel, Series

# ------------------------------------------------------------------------------------------------ page parts


def correlation_sentence(corr: dict[str, Any], what: str, unit: str) -> str:
    """One sentence: rho and p over ``corr['n']`` ``unit`` points, or why it was not computed."""
    if corr.get("rho") is None:
        return f"Spearman's rank correlation between {what}: not computed ({corr.get('why_none')})."
    return (f"Spearman's rank correlation between {what} over {corr['n']} {unit} points: "
            f"rho = {format_number(corr['rho'])}, p = {format_p(corr['p_value'])}.")


def scatter_panel(title: str, points: Sequence[dict[str, Any]], x: str, y: str, group: str,
                  xlabel: str = "KL(base || current), nats", ylabel: str = "forgetting") -> LinePanel:
    """A LinePanel of unconnected markers, one series per ``point[group]`` (points missing x or y left out)."""
    panel = LinePanel(title, [], ylabel=ylabel, xlabel=xlabel)
    for label in dict.fromkeys(str(p[group]) for p in points):
        mine = [p for p in points if str(p[group]) == label and p.get(x) is not None and p.get(y) is not None]
        if mine:
            panel.series.append(Series(label, [p[x] for p in mine], [p[y] for p in mine], linestyle="none"))
    return panel
