"""What the verbs print: the console, progress bars, and the exit code of a run with verdicts still missing."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("unforget")

EXIT_UNJUDGED = 3  # the command finished, but some verdicts are missing (a judge endpoint down): rejudge later


def console() -> Console:
    return Console(stderr=False)


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console(), transient=False,
                    disable=not sys.stdout.isatty() and os.environ.get("UNFORGET_PROGRESS") != "1")


class ProgressTracker:
    """Maps (label, done, total) callbacks onto rich progress tasks; prints a line per label when not a TTY."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)
        if self.progress.disable and done == total:
            log.info("%s: %d/%d done", label, done, total)


def rejudge_command(folder: str | Path) -> str:
    return f"unforget eval --rejudge --out {shlex.quote(str(folder))}"


def report_unjudged(con: Console, folder: str | Path, unjudged: int | None = None) -> int:
    """The exit code of a command that wrote answers to ``folder``: 0, or :data:`EXIT_UNJUDGED` with the count of
    missing verdicts (counted under ``folder`` when not given) and the command that fills them in."""
    if unjudged is None:
        from ..evaluation.rejudge import count_unjudged  # start-up time: loads torch, only once a verb has run

        unjudged = count_unjudged(folder)
    if not unjudged:
        return 0
    con.print(f"[bold yellow]{unjudged} verdicts unjudged[/] (a judge could not answer: see the log above and each "
              "record's judgements.<judge>.error). They are not counted as wrong; judge them when the judge is "
              "back, without generating again:", soft_wrap=True)
    con.print(f"  {rejudge_command(folder)}", soft_wrap=True, markup=False, highlight=False)
    return EXIT_UNJUDGED
