"""The judge-free forgetting probe in the study reports: probe.jsonl rows -> KL on chosen datasets, and how well the
probe ranks the measured forgetting (Spearman's rho over the study's points, scipy.stats.spearmanr).

Summary parts (``probe_row``, ``probe_mean``, ``rank_correlation``) are pure; the page parts (``scatter_panel``,
``correlation_sentence``) turn the summary's points into a scatter and a sentence. Used by the EMT, 2x2 and
continual reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from scipy.stats import spearmanr

from ..runs import read_jsonl
from ..stats import json_float
from .document import format_number, format_p
from .plots import LinePanel, Series

PROBE_FILE = "probe.jsonl"


def probe_row(folder: Path, **tag: Any) -> dict[str, Any] | None:
    """The last probe.jsonl row of ``folder`` whose fields match ``tag`` (e.g. epoch=2); None when there is none."""
    rows = [r for r in read_jsonl(folder / PROBE_FILE) if all(r.get(k) == v for k, v in tag.items())]
    return rows[-1] if rows else None


def probe_mean(row: dict[str, Any], datasets: Sequence[str], key: str = "kl") -> float | None:
    """Mean of ``key`` over the probe samples of ``datasets`` (per-dataset means weighted by their counts)."""
    parts = [(v["n"], v[key]) for d, v in (row.get("by_dataset") or {}).items()
             if d in datasets and v.get(key) is not None and v.get("n")]
    total = sum(n for n, _ in parts)
    return sum(n * x for n, x in parts) / total if total else None


def rank_correlation(points: Sequence[dict[str, Any]], x: str = "kl", y: str = "forgetting",
                     unit: str = "(method, epoch)") -> dict[str, Any]:
    """Spearman's rho and its p-value (scipy.stats.spearmanr) between ``point[x]`` and ``point[y]``; points missing
    either are left out. ``unit`` names what a point is, for the reason when rho cannot be computed."""
    kept = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    xs, ys = [p[x] for p in kept], [p[y] for p in kept]
    out: dict[str, Any] = {"method": "spearman", "x": x, "y": y, "n": len(kept), "rho": None, "p_value": None,
                           "why_none": None}
    if len(kept) < 3:
        out["why_none"] = f"needs at least 3 {unit} points, has {len(kept)}"
    elif len(set(xs)) < 2 or len(set(ys)) < 2:
        out["why_none"] = f"{x} or {y} is the same at every point: no ranking to correlate"
    else:
        rho, p_value = spearmanr(xs, ys)
        out["rho"], out["p_value"] = json_float(float(rho)), json_float(float(p_value))
    return out


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
