"""The EMT survey (EMT's first experiment, arXiv 2309.10313 section 3): each MLLM as an image classifier next to its
own vision encoder, on every dataset.

For every model: ``unforget eval`` on the datasets (rank or generate mode) with the encoder baselines - the linear
probe on the model's own vision tower always, zero-shot where the tower has a text side (a ``encoder/`` CLIP folder
beside the model, as tiny-llava ships, or ``eval.encoder``). A model is a zoo name, an HF folder (a fine-tuned
checkpoint saved by a study included) or ``BASE@ADAPTER_DIR`` (a peft adapter from a study on its base model).

Run folder (``runs/survey/<name>/``)::

    config.yaml
    <model-slug>/        one eval run per model: config.yaml, samples.jsonl, metrics.json, DONE
    metrics.json         the survey table: per model and dataset, MLLM and encoder accuracies with intervals
    report.html, report.md, plots/

Resumable: a model whose folder has DONE is not evaluated again; an interrupted one continues from its samples.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ...checks import open_checked_run
from ...evaluation.config import EvalConfig
from ...evaluation.evaluator import evaluate
from ...evaluation.report import eval_metrics_document
from ...models.config import ModelConfig
from ...runs import atomic_write_json, sub_run
from ..base import STUDIES
from ..report import write_study_report
from .config import SurveyConfig, SurveyEval, model_slug
from .summary import survey_table
from ...runs.layout import DONE, METRICS

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def model_config(entry: str, settings: SurveyEval) -> ModelConfig:
    base, _, adapter = entry.partition("@")
    return ModelConfig(name=base, adapter=adapter or None, dtype=settings.dtype, device=settings.device)


def eval_config(cfg: SurveyConfig, entry: str, out: Path) -> EvalConfig:
    e = cfg.eval
    return EvalConfig(model=model_config(entry, e), datasets=list(cfg.datasets), split=e.split, mode=e.mode,
                      judges=list(e.judges), limit=e.limit, sampling=e.sampling, seed=e.seed,
                      batch_size=e.batch_size, baselines=list(e.baselines),
                      encoder=e.encoder, probe_train_limit=e.probe_train_limit, out=str(out))


def run_survey(cfg: SurveyConfig, progress: ProgressFn | None = None) -> Path:
    cfg.validate()
    root = open_checked_run(Path(cfg.out or Path("runs") / "survey" / cfg.name), "survey", cfg)
    root.write_config(cfg)
    for entry in cfg.models:
        folder = root.path / model_slug(entry)
        if (folder / DONE).is_file():
            log.info("survey: %s already evaluated (%s)", entry, folder)
            continue
        ecfg = eval_config(cfg, entry, folder)
        ecfg.validate()
        run = sub_run(root.path, folder.relative_to(root.path), "eval")
        run.write_config(ecfg)
        result = evaluate(ecfg, run=run, progress=(lambda d, k, n, m=entry: progress(f"{m}: {d}", k, n))
                          if progress else None)
        run.write_metrics(eval_metrics_document(ecfg, result))
        (folder / DONE).write_text("")
    atomic_write_json(root.path / METRICS, survey_table(root.path, cfg.models, cfg.datasets).to_dict())
    write_study_report(root.path, STUDIES.get("survey"))
    return root.path
