"""Studies are whole experiments (emt, 2x2, continual, tailor, survey), each one folder under ``studies/``,
registered once by name.

A study knows everything about itself: its config dataclass, how to run it, how to read its run folder back into a
typed summary (``summarise``: the folder -> an object with ``to_dict()``, written as the folder's metrics.json),
and the page that renders that summary (``page``: summary -> :class:`unforget.reports.document.Report`).
:func:`unforget.studies.report.write_study_report` is the one writer that serves every study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry


@dataclass(frozen=True)
class Study:
    """``run(config, progress) -> run folder``; ``kind``: what its run.json records (the registered name unless it
    differs: the tailor study's folders are ``tailor-study``, the standalone `unforget tailor` run is ``tailor``);
    ``summarise(folder)`` and ``page(summary)``: its report; ``detect(folder, config)``: recognises a folder written
    before run.json existed (from its config.yaml as a mapping)."""

    name: str
    config_class: type
    run: Callable[..., Path]
    description: str = ""
    kind: str = ""
    summarise: Callable[[Path], Any] | None = None
    page: Callable[[Any], Any] | None = None
    detect: Callable[[Path, dict[str, Any]], bool] | None = None

    @property
    def run_kind(self) -> str:
        return self.kind or self.name


# a study is one folder of this package that registers itself: the first lookup imports them all
STUDIES: Registry[Study] = Registry("study", package="unforget.studies")


def study_of_kind(kind: str) -> Study | None:
    """The registered study whose run folders have this run.json kind."""
    return next((e.obj for e in STUDIES.entries() if e.obj.run_kind == kind), None)
