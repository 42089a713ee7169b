"""A report as plain data: sections of paragraphs, tables, figures and claim verdicts.

Every study builds one :class:`Report`; `render_html` (reports/html.py) and `render_markdown` (reports/markdown.py)
turn the same document into a self-contained page and a markdown summary, and `write_report` puts both next to
the run's data (``report.html``, ``report.md``, ``plots/*.png``), so the two never disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

from ..runs import atomic_write_bytes, atomic_write_text

Verdict = Literal["held", "not held", "not shown"]
PLOTS_DIR = "plots"


@dataclass
class Paragraph:
    text: str


@dataclass
class BulletList:
    items: list[str]


@dataclass
class Table:
    """``rows`` hold display strings, one per column; ``caption`` says what the numbers are."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """A PNG (bytes) shown inline in HTML and written to ``plots/<name>.png`` for markdown."""

    name: str
    png: bytes
    caption: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"figure name {self.name!r}: use letters, digits, '_', '-' and '.' only (a file name)")


@dataclass
class Claim:
    """One checked claim: ``verdict`` is held / not held / not shown; ``details`` are supporting sentences."""

    claim: str
    verdict: Verdict
    evidence: str
    details: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """From a `stats.ClaimCheck.to_dict()` (plus optional ``details``), as stored in metrics.json."""
        return cls(str(data["claim"]), data["verdict"], str(data.get("evidence", "")),
                   [str(d) for d in data.get("details", [])])


@dataclass
class ClaimList:
    claims: list[Claim]


Block = Union[Paragraph, BulletList, Table, Figure, ClaimList]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


@dataclass
class Report:
    """``facts``: short key-value lines shown under the title (model, fine-tuning set, run folder...)."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def claims(self) -> list[Claim]:
        return [c for s in self.sections for b in s.blocks if isinstance(b, ClaimList) for c in b.claims]


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    plots: list[Path]


def write_report(report: Report, folder: str | Path) -> ReportFiles:
    """Write ``report.html``, ``report.md`` and ``plots/*.png`` into ``folder`` (each atomically).

    PNGs left in ``plots/`` by an earlier report that this one no longer has are removed, so the folder always
    matches the page.
    """
    # html and markdown render this module's document types, so they import it: imported here, where both are done
    from .html import render_html
    from .markdown import render_markdown

    folder = Path(folder)
    figures = report.figures()
    names = [f.name for f in figures]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two figures share the name(s) {duplicates}: each becomes plots/<name>.png")
    plots_dir = folder / PLOTS_DIR
    plots = []
    for fig in figures:
        path = plots_dir / f"{fig.name}.png"
        atomic_write_bytes(path, fig.png)
        plots.append(path)
    if plots_dir.is_dir():
        keep = {p.name for p in plots}
        for old in plots_dir.glob("*.png"):
            if old.name not in keep:
                old.unlink()
    html_path, md_path = folder / "report.html", folder / "report.md"
    atomic_write_text(html_path, render_html(report))
    atomic_write_text(md_path, render_markdown(report))
    return ReportFiles(html_path, md_path, plots)


def figure_name(text: str) -> str:
    """``text`` made into a valid figure (file) name: runs of other characters become '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "figure"


# --------------------------------------------------------------------------------------------- number formats


def format_number(x: float | None, digits: int = 3) -> str:
    """``x`` to ``digits`` decimals; "-" for a missing or non-finite value."""
    if x is None or not math.isfinite(float(x)):
        return "-"
    text = f"{float(x):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def format_interval(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``"0.812 [0.770, 0.850]"``; the bracket is left out when the interval is unknown."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return format_number(value, digits)
    return f"{format_number(value, digits)} [{format_number(low, digits)}, {format_number(high, digits)}]"


def format_estimate(estimate: Mapping[str, Any] | None, digits: int = 3) -> str:
    """An `stats.Estimate.to_dict()` as ``"value [low, high]"``."""
    if not estimate:
        return "-"
    return format_interval(estimate.get("value"), estimate.get("low"), estimate.get("high"), digits)


def format_p(p: float | None) -> str:
    if p is None or not math.isfinite(float(p)):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
