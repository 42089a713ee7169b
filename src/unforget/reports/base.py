"""Report writers by name: one per kind of run folder (an eval run, each study).

A study plugs its report in with one registration in its own report module, and that module's name in
``REPORTS``' ``modules``::

    REPORTS.register("2x2", ReportKind("2x2", write_2x2_report, is_2x2_run, "..."))

``unforget report RUN_DIR`` asks every kind's ``detect(run_dir, config)`` which one the folder is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import read_yaml
from ..errors import DataError
from ..registry import Registry
from .document import ReportFiles


@dataclass(frozen=True)
class ReportKind:
    """``write(run_dir)`` rebuilds the report from the folder; ``detect(run_dir, config)`` recognises the folder
    from its config.yaml (as a mapping) and layout."""

    name: str
    write: Callable[[Path], ReportFiles]
    detect: Callable[[Path, dict[str, Any]], bool]
    description: str = ""


REPORTS: Registry[ReportKind] = Registry("report", modules=("unforget.reports.emt", "unforget.reports.eval_run",
                                                                  "unforget.reports.twobytwo",
                                                                  "unforget.reports.continual",
                                                                  "unforget.reports.tailor",
                                                                  "unforget.reports.survey"))


def detect_report_kind(run_dir: str | Path) -> ReportKind:
    """The kind of run in ``run_dir``, from its config.yaml; errors name what was found and how to choose."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder: pass a run folder such as runs/emt/<name>")
    if not config_path.is_file():
        raise DataError(f"{run_dir} has no config.yaml, so it is not a run folder written by unforget "
                        "(study and eval runs write one first)")
    config = read_yaml(config_path)
    matches = [e.obj for e in REPORTS.entries() if e.obj.detect(run_dir, config)]
    if not matches:
        raise DataError(f"{run_dir}: its config.yaml matches no known run kind ({', '.join(REPORTS.names())}); "
                        "pass --kind NAME")
    if len(matches) > 1:
        raise DataError(f"{run_dir} looks like several run kinds ({', '.join(m.name for m in matches)}); "
                        "pass --kind NAME")
    return matches[0]


def write_run_report(run_dir: str | Path, kind: str | None = None) -> tuple[ReportKind, ReportFiles]:
    """Rebuild the report of ``run_dir`` (its kind detected unless given)."""
    report_kind = REPORTS.get(kind) if kind else detect_report_kind(run_dir)
    return report_kind, report_kind.write(Path(run_dir))
