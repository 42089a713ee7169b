"""The Model Tailor study (arXiv 2402.12048): graft a sparse part of the fine-tuning onto the base model and
measure what the original tasks keep and what the target task reaches, against the weight-merging baselines.

``config`` (the study's YAML as dataclasses), ``plan`` (the sub-runs a config asks for), ``run`` (running them into
the run folder), ``summary`` (the folder read back: metrics.json as typed dataclasses), ``claims`` (the paper's
headline checked on the summary), ``page`` (the summary rendered). Registered once, here, as the study ``tailor``
whose run folders are of kind ``tailor-study``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...reports.document import ReportFiles
from ..base import STUDIES, Study
from ..report import write_study_report
from .claims import at_least, check_claims
from .config import HeadlineCheck, StudyCalibration, TailoringArm, TailorStudyConfig, TailorTrain, TargetTask
from .page import build_tailor_report
from .plan import SubRun, plan
from .run import run_tailor_study
from .summary import TailorSummary, summarise_numbers


def summarise_tailor(run_dir: str | Path) -> TailorSummary:
    """The study's summary (metrics.json), computed from the run folder only, with the headline verdicts."""
    return check_claims(summarise_numbers(run_dir))


def is_tailor_study(run_dir: Path, config: dict[str, Any]) -> bool:
    """A folder written before run.json existed, recognised from its config.yaml."""
    return "targets" in config and "sparsities" in config and "headline" in config


TAILOR_STUDY = STUDIES.register(Study(
    "tailor", TailorStudyConfig, run_tailor_study,
    "Model Tailor sparsity sweep vs merging baselines: retention of the original tasks, reach on the target task(s)",
    kind="tailor-study", summarise=summarise_tailor, page=build_tailor_report, detect=is_tailor_study))


def write_tailor_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the summary), report.html, report.md and plots/ into the study folder."""
    return write_study_report(run_dir, TAILOR_STUDY)


__all__ = ["HeadlineCheck", "StudyCalibration", "SubRun", "TAILOR_STUDY", "TailorStudyConfig", "TailorSummary",
           "TailorTrain", "TailoringArm", "TargetTask", "at_least", "build_tailor_report", "is_tailor_study", "plan",
           "run_tailor_study", "summarise_tailor", "write_tailor_report"]
