"""The EMT study (arXiv 2309.10313): fine-tune on one dataset, evaluate every dataset after every epoch (forgetting
curves), and check EMT's findings on the run's own samples.

``config`` (the study's YAML as dataclasses), ``run`` (running it into the run folder), ``records`` (the folder read
back), ``summary`` (metrics.json as typed dataclasses), ``claims`` (EMT's findings checked on the records), ``page``
(the summary rendered). Registered once, here, as the study ``emt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...reports.document import ReportFiles
from ..base import STUDIES, Study
from ..report import write_study_report
from .claims import EmtClaim, check_claims
from .config import EmtConfig, EmtTrain, MethodRun, arm_folder, arm_folder_name
from .page import build_emt_report
from .records import EmtRun, judged, paired_flags, read_emt_run
from .run import eval_config, run_emt
from .summary import EmtSummary, kl_forgetting_correlation, summarise_emt


def is_emt_run(run_dir: Path, config: dict[str, Any]) -> bool:
    """A folder written before run.json existed, recognised from its config.yaml."""
    return {"train", "methods", "eval"} <= set(config) and (run_dir / "base").is_dir()


EMT_STUDY = STUDIES.register(Study(
    "emt", EmtConfig, run_emt,
    "EMT: fine-tune on one set, evaluate all sets after every epoch; forgetting curves",
    summarise=summarise_emt, page=build_emt_report, detect=is_emt_run))


def write_emt_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the summary), report.html, report.md and plots/ into the study folder."""
    return write_study_report(run_dir, EMT_STUDY)


__all__ = ["EMT_STUDY", "EmtClaim", "EmtConfig", "EmtRun", "EmtSummary", "EmtTrain", "MethodRun", "arm_folder",
           "arm_folder_name", "build_emt_report", "check_claims", "eval_config", "is_emt_run", "judged",
           "kl_forgetting_correlation", "paired_flags", "read_emt_run", "run_emt", "summarise_emt",
           "write_emt_report"]
