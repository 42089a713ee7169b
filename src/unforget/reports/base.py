"""Report writers by kind: one per kind of run folder (an eval run, a fine-tuning run, each study...).

A kind plugs its report in with one registration in its own report module, and that module's name in
``REPORTS``' ``modules``::

    REPORTS.register("2x2", ReportKind("2x2", write_2x2_report, is_2x2_run, "..."))

The kind names are the kinds ``run.json`` records (:mod:`unforget.runs.manifest`), so ``unforget report RUN_DIR``
reads the folder's kind from its ``run.json``. Folders written before ``run.json`` existed have none: for them each
kind's ``detect(run_dir, config)`` guesses from config.yaml and the layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import read_yaml
from ..errors import DataError
from ..registry import Registry, did_you_mean
from ..runs import CONFIG, MANIFEST, read_manifest
from .document import ReportFiles


@dataclass(frozen=True)
class ReportKind:
    """``write(run_dir)`` rebuilds the report from the folder; ``detect(run_dir, config)`` recognises a folder
    without run.json from its config.yaml (as a mapping; empty when there is none) and layout."""

    name: str
    write: Callable[[Path], ReportFiles]
    detect: Callable[[Path, dict[str, Any]], bool]
    description: str = ""


REPORTS: Registry[ReportKind] = Registry("report", modules=("unforget.reports.emt", "unforget.reports.eval_run",
                                                                  "unforget.reports.finetune",
                                                                  "unforget.reports.twobytwo",
                                                                  "unforget.reports.continual",
                                                                  "unforget.reports.tailor",
                                                                  "unforget.reports.tailor_run",
                                                                  "unforget.reports.judge_validate",
                                                                  "unforget.reports.survey"))


def detect_report_kind(run_dir: str | Path) -> ReportKind:
    """The kind of run in ``run_dir``: the one its run.json names; for a folder without run.json, guessed from
    its config.yaml and layout. Errors name what was found and how to choose."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder: pass a run folder such as runs/emt/<name>")
    manifest = read_manifest(run_dir)
    if manifest is not None:
        if manifest.kind not in REPORTS:
            raise DataError(f"{run_dir / MANIFEST} names the run kind '{manifest.kind}', which has no report."
                            f"{did_you_mean(manifest.kind, REPORTS.names())} Reports exist for "
                            f"{', '.join(REPORTS.names())}; pass --kind NAME to use one of them")
        return REPORTS.get(manifest.kind)
    return guess_report_kind(run_dir)


def guess_report_kind(run_dir: str | Path) -> ReportKind:
    """The kind of a folder written before run.json existed, from its config.yaml and layout."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG
    config = read_yaml(config_path) if config_path.is_file() else {}
    matches = [e.obj for e in REPORTS.entries() if e.obj.detect(run_dir, config if isinstance(config, dict) else {})]
    if not matches:
        if not config_path.is_file():
            raise DataError(f"{run_dir} has no {MANIFEST} and no {CONFIG}, so it is not a run folder written by "
                            f"unforget; if it is one, pass --kind NAME ({', '.join(REPORTS.names())})")
        raise DataError(f"{run_dir}: it has no {MANIFEST} and its {CONFIG} matches no known run kind "
                        f"({', '.join(REPORTS.names())}); pass --kind NAME")
    if len(matches) > 1:
        raise DataError(f"{run_dir} has no {MANIFEST} and looks like several run kinds "
                        f"({', '.join(m.name for m in matches)}); pass --kind NAME")
    return matches[0]


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


def write_run_report(run_dir: str | Path, kind: str | None = None) -> tuple[ReportKind, ReportFiles]:
    """Rebuild the report of ``run_dir`` (its kind read from run.json unless given)."""
    report_kind = REPORTS.get(kind) if kind else detect_report_kind(run_dir)
    return report_kind, report_kind.write(Path(run_dir))
