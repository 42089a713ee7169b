"""A :class:`~unforget.reports.document.Report` as one self-contained HTML page.

No external assets: the CSS is inline and every plot is a base64 PNG ``<img>``, so the file can be mailed, archived
or opened offline. All text is escaped; nothing in a run folder can inject markup.
"""

from __future__ import annotations

import base64
from html import escape

from .document import BulletList, Claim, ClaimList, Figure, Paragraph, Report, Section, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1.5rem; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; margin-top: 2.2rem; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; margin: .8rem 0 1.2rem; }
dl.facts dt { font-weight: 600; color: #57606a; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, Menlo, Consolas, monospace;
              font-size: .92em; }
nav.toc { font-size: .95em; }
nav.toc a { margin-right: 1rem; }
div.scroll { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0 .3rem; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td { font-variant-numeric: tabular-nums; }
p.caption { color: #57606a; font-size: .88em; margin-top: .2rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .88em; }
ul.claims { list-style: none; padding-left: 0; }
ul.claims > li { margin: .7rem 0; padding: .55rem .8rem; border: 1px solid #d0d7de; border-radius: 6px; }
.badge { display: inline-block; min-width: 5.5rem; text-align: center; border-radius: 1rem; padding: .05rem .6rem;
         font-size: .8em; font-weight: 700; margin-right: .6rem; color: #fff; }
.badge.held { background: #1a7f37; }
.badge.not-held { background: #cf222e; }
.badge.not-shown { background: #6e7781; }
.claim-text { font-weight: 600; }
.evidence { margin: .3rem 0 0; font-size: .92em; }
p, li, figcaption, p.caption { overflow-wrap: anywhere; }
ul.details { margin: .3rem 0 0; font-size: .86em; color: #57606a; }
"""


def render_html(report: Report) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(report.title)}</h1>",
    ]
    if report.facts:
        parts.append('<dl class="facts">')
        parts.extend(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in report.facts)
        parts.append("</dl>")
    if len(report.sections) > 1:
        links = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in report.sections)
        parts.append(f'<nav class="toc">{links}</nav>')
    parts.extend(_section(s) for s in report.sections)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _section(section: Section) -> str:
    out = [f'<section id="{escape(section.anchor)}">', f"<h2>{escape(section.title)}</h2>"]
    out.extend(_block(b) for b in section.blocks)
    out.append("</section>")
    return "\n".join(out)


def _block(block: object) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, BulletList):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, ClaimList):
        return '<ul class="claims">' + "".join(_claim(c) for c in block.claims) + "</ul>"
    raise TypeError(f"a report block must be a Paragraph, BulletList, Table, Figure or ClaimList, got {type(block)}")


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in table.rows)
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    # a table wider than the page scrolls inside its own box; the page itself never scrolls sideways
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{caption}'


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    alt = escape(fig.caption or fig.name)
    caption = f"<figcaption>{escape(fig.caption)}</figcaption>" if fig.caption else ""
    return (f'<figure id="fig-{escape(fig.name)}"><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"{caption}</figure>")


def _claim(claim: Claim) -> str:
    css = claim.verdict.replace(" ", "-")
    details = ""
    if claim.details:
        details = '<ul class="details">' + "".join(f"<li>{escape(d)}</li>" for d in claim.details) + "</ul>"
    return (f'<li class="claim {css}"><span class="badge {css}">{escape(claim.verdict)}</span>'
            f'<span class="claim-text">{escape(claim.claim)}</span>'
            f'<p class="evidence">{escape(claim.evidence)}</p>{details}</li>')
