"""The 2x2 study (arXiv 2603.14493, "Fine-tuning MLLMs Without Forgetting Is Easier Than You Think").

One VQA fine-tuning task and four evaluation cells, evaluated on the base model once and after every run:

=====================  ==========================  ==============================
                        ID text (the task's type)   OOD text (other questions)
=====================  ==========================  ==============================
ID images               the task's own test split   same images, other question types
OOD images              other images, same type     general VQA / classification
=====================  ==========================  ==============================

Runs: a regularisation **sweep** (methods x learning rates x epochs) and **data-hybrid** training (a share r of
other data - other tasks, general VQA, or replay of the base model's own answers - mixed into a fixed budget of
examples, by sample or by batch; see :mod:`unforget.training.mixing`).

Run folder (``runs/2x2/<name>/``)::

    config.yaml                      the resolved study config
    cells.json                       each cell's reference and the dataset name its records carry
    probe_base.safetensors           the base model's next-token distributions on the probe set (probe.enabled)
    base/                            the base model on the four cells: samples.jsonl (epoch 0), metrics.json,
                                     probe.jsonl (its probe row: KL 0, the label mass before fine-tuning),
                                     language.jsonl (answer log-likelihood, held-out perplexity: a "text" set among
                                     extra_datasets), DONE
    replay/<source>/                 the base model's answers on a replay source: replay.jsonl, images/, DONE
    sweep/<method>-lr<lr>-e<epochs>/ one sweep run: spec.json, train/, samples.jsonl, probe.jsonl (the judge-free
                                     probe after training: KL from the base model per cell, label mass),
                                     language.jsonl (after training), metrics.json, DONE
    hybrid/r<r>[-<mix_by>]/          one hybrid run, the same files
    metrics.json, report.html, report.md, plots/   the summary, built from the folders above only

Every step resumes: a finished base evaluation, replay set or run (DONE) is not redone; an interrupted fine-tuning
continues from its last checkpoint and an interrupted evaluation from its last sample.

The folder: ``config.py`` (the config), ``plan.py`` (the runs it makes), ``run.py`` (running it), ``replay.py``
(the replay sets), ``records.py`` (the run folder read back), ``summary.py`` (the typed summary, metrics.json),
``claims.py`` (the paper's claims checked on it), ``page.py`` (the report page).
"""

from __future__ import annotations

from pathlib import Path

from ...reports.document import ReportFiles
from ..base import STUDIES, Study
from ..report import write_study_report
from .config import Cells, HybridConfig, HybridSource, LogGrid, SweepConfig, SweepMethod, TwoByTwoConfig, TwoByTwoTrain
from .page import build_twobytwo_report
from .plan import RunSpec, eval_config, hybrid_plan, hybrid_probs, replay_counts_needed, sweep_plan
from .records import is_twobytwo_run
from .run import run_twobytwo, write_cell_names
from .summary import TwoByTwoSummary, summarise_twobytwo

TWOBYTWO_STUDY = STUDIES.register(Study(
    "2x2", TwoByTwoConfig, run_twobytwo,
    "2x2 ID/OOD image x text cells; lr / method sweeps (Pareto), data-hybrid training",
    summarise=summarise_twobytwo, page=build_twobytwo_report, detect=is_twobytwo_run))


def write_twobytwo_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the summary), report.html, report.md and plots/ into the study folder."""
    return write_study_report(run_dir, TWOBYTWO_STUDY)


__all__ = ["Cells", "HybridConfig", "HybridSource", "LogGrid", "RunSpec", "SweepConfig", "SweepMethod",
           "TWOBYTWO_STUDY", "TwoByTwoConfig", "TwoByTwoSummary", "TwoByTwoTrain", "build_twobytwo_report",
           "eval_config", "hybrid_plan", "hybrid_probs", "is_twobytwo_run", "replay_counts_needed", "run_twobytwo",
           "summarise_twobytwo", "sweep_plan", "write_cell_names", "write_twobytwo_report"]
