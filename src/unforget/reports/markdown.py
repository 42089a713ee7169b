"""A :class:`~unforget.reports.document.Report` as a markdown summary (GitHub-flavoured tables).

Plots are referenced as files, ``plots/<name>.png`` next to ``report.md``, which `write_report` writes.
"""

from __future__ import annotations

from .document import PLOTS_DIR, BulletList, Claim, ClaimList, Figure, Paragraph, Report, Section, Table

VERDICT_MARK = {"held": "HELD", "not held": "NOT HELD", "not shown": "NOT SHOWN"}


def render_markdown(report: Report, plots_dir: str = PLOTS_DIR) -> str:
    out = [f"# {_inline(report.title)}", ""]
    for key, value in report.facts:
        code = value.replace("`", "'")
        out.append(f"- **{_inline(key)}**: `{code}`")
    if report.facts:
        out.append("")
    for section in report.sections:
        out.extend(_section(section, plots_dir))
    return "\n".join(out).rstrip() + "\n"


def _section(section: Section, plots_dir: str) -> list[str]:
    out = [f"## {_inline(section.title)}", ""]
    for block in section.blocks:
        out.extend(_block(block, plots_dir))
        out.append("")
    return out


def _block(block: object, plots_dir: str) -> list[str]:
    if isinstance(block, Paragraph):
        return [_inline(block.text)]
    if isinstance(block, BulletList):
        return [f"- {_inline(i)}" for i in block.items]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        lines = [f"![{block.name}]({plots_dir}/{block.name}.png)"]
        if block.caption:
            lines += ["", f"*{_inline(block.caption)}*"]
        return lines
    if isinstance(block, ClaimList):
        return [line for c in block.claims for line in _claim(c)]
    raise TypeError(f"a report block must be a Paragraph, BulletList, Table, Figure or ClaimList, got {type(block)}")


def _table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{_inline(table.caption)}*"]
    return lines


def _claim(claim: Claim) -> list[str]:
    lines = [f"- **[{VERDICT_MARK[claim.verdict]}]** {_inline(claim.claim)}  ", f"  {_inline(claim.evidence)}"]
    lines += [f"  - {_inline(d)}" for d in claim.details]
    return lines


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|")


def _inline(text: str) -> str:
    """One line of text with the characters markdown would read as markup escaped."""
    text = " ".join(str(text).split())
    for ch in ("\\", "*", "`", "<"):
        text = text.replace(ch, "\\" + ch)
    return text
