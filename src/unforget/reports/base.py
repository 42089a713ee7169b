"""Report writers of the run folders that are not studies (eval, finetune, tailor, judge-validate); a study's report
is written by its own folder's page through :mod:`unforget.studies.report`, which also dispatches
``unforget report RUN_DIR`` over both.

A kind plugs its report in with one registration in its own module of this package, found by the registry's scan
of the folder (nothing else to edit)::

    REPORTS.register(ReportKind("2x2", write_2x2_report, is_2x2_run, "what `unforget ls reports` says"))

The kind names are the kinds ``run.json`` records (:mod:`unforget.runs.manifest`), so ``unforget report RUN_DIR``
reads the folder's kind from its ``run.json``. Folders written before ``run.json`` existed have none: for them each
kind's ``detect(run_dir, config)`` guesses from config.yaml and the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry
from ..runs import MANIFEST, read_manifest
from .document import ReportFiles


@dataclass(frozen=True)
class ReportKind:
    """``write(run_dir)`` rebuilds the report from the folder; ``detect(run_dir, config)`` recognises a folder
    without run.json from its config.yaml (as a mapping; empty when there is none) and layout."""

    name: str
    write: Callable[[Path], ReportFiles]
    detect: Callable[[Path, dict[str, Any]], bool]
    description: str = ""


# a report kind is one module of this package that registers itself: the first lookup imports them all
REPORTS: Registry[ReportKind] = Registry("report", package="unforget.reports")


def parent_study(run_dir: str | Path) -> tuple[str, Path] | None:
    """(the study's kind, its folder) when ``run_dir`` is a study's sub-run (its run.json names a parent): the
    nearest folder above it whose run.json is of that kind (the folder above when none says so)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None or not manifest.parent:
        return None
    for folder in run_dir.parents:
        found = read_manifest(folder) if (folder / MANIFEST).is_file() else None
        if found is not None and found.kind == manifest.parent:
            return manifest.parent, folder
    return manifest.parent, run_dir.parent
