"""The continual-learning study: a sequence of tasks fine-tuned one after another by each strategy, every task
evaluated after each, measured with the accuracy matrix R[i][j] (ACC, BWT, FWT, forgetting).

``config`` (the study's YAML as dataclasses), ``strategies`` (how each task is trained: naive, regularised, replay,
ewc, l2, lwf, model-tailor, registered by name), ``run`` (running them into the run folder; its layout there),
``layout`` (the folder names), ``records`` (the folder read back), ``metrics`` (the avalanche-style metrics of R),
``claims`` (each strategy against naive fine-tuning), ``summary`` (metrics.json as typed dataclasses), ``page``
(the summary rendered). Registered once, here, as the study ``continual``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...reports.document import ReportFiles
from ..base import STUDIES, Study
from ..report import write_study_report
from .claims import ForgetsLessClaim
from .config import ContinualConfig, ContinualTrain, StrategyRun, default_plan, eval_config
from .layout import BASE_DIR, WEIGHTS_FILE, step_folder_name
from .metrics import ContinualEstimates, ContinualMetrics, continual_metrics, continual_metrics_with_intervals
from .page import build_continual_report
from .records import task_labels
from .run import run_continual
from .strategies import STRATEGIES, Step, Strategy, TrainPlan
from .summary import ContinualSummary, summarise_continual


def is_continual_run(run_dir: Path, config: dict[str, Any]) -> bool:
    """A folder written before run.json existed, recognised from its config.yaml and its base folder."""
    return {"tasks", "strategies"} <= set(config) and (run_dir / BASE_DIR).is_dir()


CONTINUAL_STUDY = STUDIES.register(Study(
    "continual", ContinualConfig, run_continual,
    "continual learning over a task sequence: R[i][j], ACC, BWT, FWT, forgetting, strategies",
    summarise=summarise_continual, page=build_continual_report, detect=is_continual_run))


def write_continual_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the summary), report.html, report.md and plots/ into the study folder."""
    return write_study_report(run_dir, CONTINUAL_STUDY)


__all__ = ["BASE_DIR", "CONTINUAL_STUDY", "STRATEGIES", "WEIGHTS_FILE", "ContinualConfig", "ContinualEstimates",
           "ContinualMetrics", "ContinualSummary", "ContinualTrain", "ForgetsLessClaim", "Step", "Strategy",
           "StrategyRun", "TrainPlan", "build_continual_report", "continual_metrics",
           "continual_metrics_with_intervals", "default_plan", "eval_config", "is_continual_run", "run_continual",
           "step_folder_name", "summarise_continual", "task_labels", "write_continual_report"]
