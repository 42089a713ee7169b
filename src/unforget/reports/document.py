"""A report as plain data: sections of paragraphs, tables, figures and claim verdicts.

Every study builds one :class:`Report`; `render_html` (reports/html.py) and `render_markdown` (reports/markdown.py)
turn the same document into a self-contained page and a markdown summary, and `write_report` puts both next to
the run's data (``report.html``, ``report.md``, ``plots/*.png``), so the two never disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

from ..runs import atomic_write_bytes, atomic_write_text
from ..stats import ClaimCheck, PairedTest

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


TEST_NAMES = {"mcnemar_exact": "exact McNemar", "paired_bootstrap": "paired bootstrap"}


def name_the_changes(check: ClaimCheck, rose: str, fell: str) -> ClaimCheck:
    """``check`` with the paired test's discordant counts said as what happened instead of "N samples worse, M
    better" (which reads backwards when the flag counted is a fault, e.g. an answer naming a leaked label).
    ``rose`` / ``fell``: templates with ``{n}`` for the samples whose flag went from no to yes (score: higher after)
    and from yes to no (lower after), e.g. ``"{n} more answers name a digits label"``."""
    test = check.test
    if test is None:
        return check
    generic = f"({test.n_discordant_b} samples worse, {test.n_discordant_c} better)"
    plain = f"({rose.format(n=test.n_discordant_c)}; {fell.format(n=test.n_discordant_b)})"
    return replace(check, evidence=check.evidence.replace(generic, plain))


def test_text(test: PairedTest | Mapping[str, Any] | None, margin: float | None = None) -> str:
    """The test behind a verdict, for a table cell: "exact McNemar p=0.003 (alpha 0.05)", plus the margin of a
    no-change claim ("within +/-0.05")."""
    if test is None:
        return "-"
    data = test.to_dict() if isinstance(test, PairedTest) else test
    text = f"{TEST_NAMES.get(data['test'], data['test'])} p={format_p(data['p_value'])} (alpha {data['alpha']:g})"
    return text + (f"; margin +/-{margin:g}" if margin else "")


def claim_test_text(check: ClaimCheck) -> str:
    """The test a verdict came from, as the claim was tested, for a table cell: "one-sided exact McNemar (delta < 0,
    alpha 0.05) p=0.001", or "non-inferiority (margin 0.1; lower end of the 95% interval)" where an interval
    against a margin decides."""
    if check.method is None:
        return test_text(check.test)
    return f"{check.method} p={format_p(check.p_value)}" if check.p_value is not None else check.method


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


def preconditions_section(checks: Sequence[Any]) -> Section:
    """What must hold before a study's claims mean anything, first on the page. ``checks``: objects with ``name``,
    ``held`` (True / False / None: not measured yet) and ``evidence`` (`studies.preconditions.Precondition`)."""
    failed = [c for c in checks if c.held is False]
    if failed:
        intro = (f"{len(failed)} of {len(checks)} preconditions failed on this run, so it cannot show the effects "
                 "that lean on them: those claims get no verdict below ('not shown', with the reason).")
    elif all(c.held is True for c in checks):
        intro = "Every precondition held: the claims below are judged on effects this run shows."
    else:
        intro = "Some preconditions could not be measured yet (no paired sample); their claims wait for them."
    verdicts = {True: "held", False: "not held", None: "not shown"}
    return Section("Preconditions", [Paragraph(intro),
                                     ClaimList([Claim(c.name, verdicts[c.held], c.evidence) for c in checks])])


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
