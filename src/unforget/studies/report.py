"""The one report writer of every study, and ``unforget report RUN_DIR`` for any folder unforget writes.

A study's report is its summary (read from the folder, written as metrics.json) rendered by its page; the other
kinds of folder (eval, finetune, tailor, judge-validate) have their writers in :mod:`unforget.reports`. The kind
comes from the folder's run.json; a folder written before run.json existed is recognised from its config.yaml.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import read_yaml
from ..errors import DataError
from ..registry import did_you_mean
from ..reports.base import REPORTS
from ..reports.document import ReportFiles, write_report
from ..runs import CONFIG, MANIFEST, atomic_write_json, read_manifest
from .base import STUDIES, Study, study_of_kind
from ..runs.layout import METRICS

log = logging.getLogger(__name__)


def write_study_report(folder: str | Path, study: Study) -> ReportFiles:
    """Summarise ``folder`` (metrics.json) and write report.html, report.md and plots/ from that summary."""
    if study.summarise is None or study.page is None:
        raise DataError(f"study '{study.name}' has no report")
    folder = Path(folder)
    summary = study.summarise(folder)
    atomic_write_json(folder / METRICS, summary.to_dict() if hasattr(summary, "to_dict") else summary)
    files = write_report(study.page(summary), folder)
    log.info("%s report: %s", study.name, files.html)
    return files


@dataclass(frozen=True)
class ReportWriter:
    name: str
    write: Callable[[Path], ReportFiles]


def report_writers() -> dict[str, ReportWriter]:
    """Every kind of run folder that has a report: the non-study kinds of reports/ and every study's kind."""
    return _writers()


def _writers() -> dict[str, ReportWriter]:
    writers = {e.name: ReportWriter(e.name, e.obj.write) for e in REPORTS.entries()}
    for e in STUDIES.entries():
        study = e.obj
        if study.summarise is not None and study.page is not None:
            writers[study.run_kind] = ReportWriter(study.run_kind,
                                                   lambda folder, s=study: write_study_report(folder, s))
    return writers


def _guess(folder: Path, writers: dict[str, ReportWriter]) -> ReportWriter:
    config_path = folder / CONFIG
    config = read_yaml(config_path) if config_path.is_file() else {}
    config = config if isinstance(config, dict) else {}
    matches = {e.name for e in REPORTS.entries() if e.obj.detect(folder, config)}
    matches |= {e.obj.run_kind for e in STUDIES.entries() if e.obj.detect is not None and e.obj.detect(folder, config)}
    names = ", ".join(sorted(writers))
    if not matches:
        if not config_path.is_file():
            raise DataError(f"{folder} has no {MANIFEST} and no {CONFIG}, so it is not a run folder written by "
                            f"unforget; if it is one, pass --kind NAME ({names})")
        raise DataError(f"{folder}: it has no {MANIFEST} and its {CONFIG} matches no known run kind ({names}); "
                        "pass --kind NAME")
    if len(matches) > 1:
        raise DataError(f"{folder} has no {MANIFEST} and looks like several run kinds ({', '.join(sorted(matches))});"
                        " pass --kind NAME")
    return writers[matches.pop()]


def guess_report_kind(run_dir: str | Path) -> ReportWriter:
    """The report of a folder written before run.json existed, from its config.yaml and layout."""
    return _guess(Path(run_dir), _writers())


def detect_report_kind(run_dir: str | Path, kind: str | None = None) -> ReportWriter:
    """The report of ``run_dir``: the writer of ``kind``, else of the kind its run.json records (guessed from
    config.yaml for a folder without run.json). Errors name what was found and how to choose."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: pass a run folder such as runs/emt/<name>")
    writers = _writers()
    wanted = kind or (m.kind if (m := read_manifest(folder)) is not None else None)
    if wanted is None:
        return _guess(folder, writers)
    if wanted in writers:
        return writers[wanted]
    where = "--kind" if kind else str(folder / MANIFEST)
    raise DataError(f"{where} names the run kind '{wanted}', which has no report."
                    f"{did_you_mean(wanted, list(writers))} Reports exist for {', '.join(sorted(writers))}; pass "
                    "--kind NAME to use one of them")


def write_run_report(run_dir: str | Path, kind: str | None = None) -> tuple[ReportWriter, ReportFiles]:
    """Rebuild the report of ``run_dir``: the writer of ``kind``, else of the kind its run.json records."""
    writer = detect_report_kind(run_dir, kind)
    return writer, writer.write(Path(run_dir))


__all__ = ["detect_report_kind", "guess_report_kind", "report_writers", "study_of_kind", "write_run_report",
           "write_study_report"]
