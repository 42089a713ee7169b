"""`unforget report RUN_DIR`: rebuild a run folder's report (HTML, markdown, plots) from its files."""

from __future__ import annotations

import argparse

from ..studies.report import write_run_report
from .console import console
from .verb import Verb


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder: runs/emt/<name>, runs/eval/<name>, ...")
    p.add_argument("--kind", help="the report to write: {reports}, or a study's (`unforget ls studies`); default: "
                                  "the kind the folder's run.json records (guessed from config.yaml for folders "
                                  "without one)")


def run_report(args: argparse.Namespace) -> int:
    kind, files = write_run_report(args.run_dir, args.kind)
    con = console()
    con.print(f"[bold]{kind.name} report[/] rebuilt from {args.run_dir}")
    con.print(f"  {files.html}")
    con.print(f"  {files.markdown}")
    con.print(f"  {len(files.plots)} plot(s) in {files.html.parent / 'plots'}")
    return 0


VERB = Verb("report", "rebuild the HTML/markdown report of a run folder (study or eval run)", add_report, run_report)
