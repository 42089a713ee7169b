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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from ..data.sampling import SamplingStrategy
from ..errors import ConfigError
from ..evaluation.config import EvalConfig
from ..models.config import ModelConfig
from ..checks import open_checked_run
from ..runs import RunDir, atomic_write_json, read_json, sub_run
from .base import STUDIES, Study

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass
class SurveyEval:
    """How every model is evaluated (the same for all, so the table compares like with like)."""

    mode: Literal["generate", "rank"] = "rank"
    judges: list[str] = field(default_factory=lambda: ["exact"])
    split: str = "test"
    limit: int | None = 200  # samples per dataset, drawn as `sampling` says (the same for every model)
    sampling: SamplingStrategy = "stratified"
    seed: int = 0
    batch_size: int = 16
    baselines: list[str] = field(default_factory=lambda: ["zero-shot", "linear-probe"])
    probe_train_limit: int = 1000
    encoder: str | None = None  # CLIP folder for zero-shot of every model; default: each model's own encoder/
    dtype: str = "auto"
    device: str = "auto"


@dataclass
class SurveyConfig:
    name: str = "survey"
    models: list[str] = field(default_factory=lambda: ["tiny-llava"])
    datasets: list[str] = field(default_factory=lambda: ["digits", "shapes", "letters", "colour-shapes"])
    eval: SurveyEval = field(default_factory=SurveyEval)
    out: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("survey: name at least one model (--models tiny-llava,smol-llava,PATH)")
        if not self.datasets:
            raise ConfigError("survey: name at least one dataset (--datasets digits,shapes)")
        slugs = [model_slug(m) for m in self.models]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"survey: two models share a folder name ({slugs}); give distinct paths")


def model_slug(model: str) -> str:
    """A folder name for a model entry: the last path parts, ``@adapter`` appended."""
    base, _, adapter = model.partition("@")
    name = "-".join(Path(base.rstrip("/")).parts[-2:]) if "/" in base else base
    if adapter:
        name += "-" + "-".join(Path(adapter.rstrip("/")).parts[-2:])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


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
    from ..evaluation.evaluator import evaluate
    from ..evaluation.report import eval_metrics_document

    cfg.validate()
    root = open_checked_run(Path(cfg.out or Path("runs") / "survey" / cfg.name), "survey", cfg)
    root.write_config(cfg)
    for entry in cfg.models:
        folder = root.path / model_slug(entry)
        if (folder / "DONE").is_file():
            log.info("survey: %s already evaluated (%s)", entry, folder)
            continue
        ecfg = eval_config(cfg, entry, folder)
        ecfg.validate()
        run = sub_run(root.path, folder.relative_to(root.path), "eval")
        run.write_config(ecfg)
        result = evaluate(ecfg, run=run, progress=(lambda d, k, n, m=entry: progress(f"{m}: {d}", k, n))
                          if progress else None)
        run.write_metrics(eval_metrics_document(ecfg, result))
        (folder / "DONE").write_text("")
    atomic_write_json(root.path / "metrics.json", survey_table(root.path, cfg.models, cfg.datasets))
    from ..reports.survey import write_survey_report

    write_survey_report(root.path)
    return root.path


def survey_table(root: Path, models: list[str], datasets: list[str]) -> dict[str, Any]:
    """The survey's rows from the model folders' metrics.json (nothing recomputed): per model and dataset the
    MLLM's accuracy and each encoder baseline's, with their Wilson intervals."""
    rows = []
    for entry in models:
        metrics = read_json(root / model_slug(entry) / "metrics.json")
        for name in datasets:
            d = (metrics.get("datasets") or {}).get(name)
            if d is None:
                continue
            row: dict[str, Any] = {"model": entry, "dataset": name, "n": d.get("n"),
                                   "mllm": _estimate(d)}
            for kind, b in (d.get("baselines") or {}).items():
                row[kind] = {**_estimate(b), "n_train": b.get("n_train", 0)}
            rows.append(row)
    return {"models": models, "datasets": datasets, "rows": rows}


def _estimate(d: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": d.get("accuracy"), "low": d.get("accuracy_low"), "high": d.get("accuracy_high")}


STUDIES.register("survey", Study("survey", SurveyConfig, run_survey,
                                 "EMT's survey: each MLLM vs its own vision encoder (zero-shot, linear probe)"),
                 description="each MLLM as a classifier next to its vision encoder (zero-shot, linear probe)")
