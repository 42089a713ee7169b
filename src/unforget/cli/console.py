"""What the verbs print: the console, progress bars, and the exit code of a run with verdicts still missing."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("unforget")

EXIT_UNJUDGED = 3  # the command finished, but some verdicts are missing (a judge endpoint down): rejudge later
PIPED_WIDTH = 200  # columns of a console writing to a file or pipe (rich would cut tables at 80)
PROGRESS_EVERY_S = 30.0  # seconds between two progress lines without a terminal


def console() -> Console:
    """The verbs' console. On a terminal, its width; piped or in a batch job, ``--width`` (UNFORGET_WIDTH) or
    :data:`PIPED_WIDTH` columns, so that tables are not cut to 80."""
    width = os.environ.get("UNFORGET_WIDTH")
    if width:
        return Console(stderr=False, width=int(width))
    con = Console(stderr=False)
    return con if con.is_terminal else Console(stderr=False, width=PIPED_WIDTH)


def is_interactive() -> bool:
    return sys.stdout.isatty() or os.environ.get("UNFORGET_PROGRESS") == "1"


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console(), transient=False,
                    disable=not is_interactive())


class ProgressTracker:
    """Maps (label, done, total) callbacks onto rich progress tasks. Without a terminal (piped, a batch job) the bar
    is off and a plain line is written instead, per label (a dataset, training): at the first step, every
    ``every_s`` seconds, and at the end: done of total, the rate, and the time left at that rate."""

    def __init__(self, progress: Progress, *, every_s: float | None = None, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        env = os.environ.get("UNFORGET_PROGRESS_EVERY")
        self.every_s = every_s if every_s is not None else float(env) if env else PROGRESS_EVERY_S
        self.out = out
        self.clock = clock
        self.started: dict[str, tuple[float, int]] = {}  # label -> (time, done) when first seen
        self.last_line: dict[str, float] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)
        if self.progress.disable:
            self._plain_line(label, done, total)

    def _plain_line(self, label: str, done: int, total: int) -> None:
        now = self.clock()
        if label not in self.started:
            self.started[label] = (now, done)
            self.last_line[label] = now
            self._write(f"{label}: {done}/{total} (started)" if done < total else f"{label}: {done}/{total} done")
            return
        finished = done >= total
        if not finished and now - self.last_line[label] < self.every_s:
            return
        self.last_line[label] = now
        t0, done0 = self.started[label]
        elapsed = now - t0
        rate = (done - done0) / elapsed if elapsed > 0 else 0.0
        line = f"{label}: {done}/{total} ({100.0 * done / max(total, 1):.0f}%), {rate:.2f}/s"
        if finished:
            line += f", done in {format_duration(elapsed)}"
        else:
            line += f", {format_duration((total - done) / rate)} left" if rate > 0 else ", time left unknown"
        self._write(line)

    def _write(self, line: str) -> None:
        out = self.out or sys.stdout
        print(line, file=out, flush=True)  # flushed: a batch job's log shows it now, not when the buffer fills


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``, ``3700`` -> ``1h01m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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
