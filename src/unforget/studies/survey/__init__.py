"""The EMT survey (EMT's first experiment, arXiv 2309.10313 section 3): each MLLM as an image classifier next to its
own vision encoder (zero-shot, linear probe), on every dataset.

``config`` (the survey's YAML as dataclasses), ``run`` (an evaluation per model into the run folder), ``summary``
(the folder read back: the survey table, metrics.json), ``page`` (the table and bar charts). Registered once, here,
as the study ``survey``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...reports.document import ReportFiles
from ..base import STUDIES, Study
from ..report import write_study_report
from .config import SurveyConfig, SurveyEval, model_slug
from .page import build_survey_report
from .run import eval_config, model_config, run_survey
from .summary import SurveyRow, SurveySummary, SurveyTable, summarise_survey, survey_table


def is_survey_run(run_dir: Path, config: dict[str, Any]) -> bool:
    """A folder written before run.json existed, recognised from its config.yaml."""
    return "models" in config and "datasets" in config and "eval" in config and "train" not in config


SURVEY_STUDY = STUDIES.register(Study(
    "survey", SurveyConfig, run_survey,
    "each MLLM as a classifier next to its vision encoder (zero-shot, linear probe)",
    summarise=summarise_survey, page=build_survey_report, detect=is_survey_run))


def write_survey_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the survey table), report.html, report.md and plots/ into the survey folder."""
    return write_study_report(run_dir, SURVEY_STUDY)


__all__ = ["SURVEY_STUDY", "SurveyConfig", "SurveyEval", "SurveyRow", "SurveySummary", "SurveyTable",
           "build_survey_report", "eval_config", "is_survey_run", "model_config", "model_slug", "run_survey",
           "summarise_survey", "survey_table", "write_survey_report"]
