"""The report of a fine-tuning run folder: the loss curve, the checkpoints, and any evaluation made during training.

Inputs (written by :mod:`unforget.training.trainer`): ``config.yaml`` (the resolved FinetuneConfig),
``train_log.jsonl`` (one line per optimizer step: step, epoch, loss, lr, grad_norm, seconds),
``checkpoints/<epoch-N|step-N>/trainer_state.json``, and ``metrics.json`` (the run's result, written when it
finished). A study's fine-tuning sub-run (an EMT arm, a 2x2 run, a continual step) keeps the training folder in
``train/`` and its evaluations after each epoch (or step) beside it, in ``samples.jsonl`` tagged with the epoch:
those are read too. Nothing is recomputed but the accuracies (Wilson intervals) from the judged records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import read_yaml
from ..errors import DataError
from ..runs import CONFIG, DONE, METRICS, SAMPLES, read_json, read_jsonl
from ..stats import Estimate, wilson_interval
from .base import REPORTS, ReportKind, parent_study
from .document import (
    BulletList,
    Figure,
    Paragraph,
    Report,
    ReportFiles,
    Section,
    Table,
    format_interval,
    format_number,
    write_report,
)
from .names import display_names, named_refs
from .plots import LinePanel, Series, line_plot, moving_average
from ..runs.layout import TRAIN_LOG

# the layout of unforget.training (not imported: that pulls in torch)
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
TRAIN_SUBFOLDER = "train"  # a study's sub-run keeps its training folder here
TRAIN_RESULT = "train_result.json"  # ... and the training result beside it
TAG_KEYS = ("epoch", "step")  # what the studies tag their evaluation records with
SMOOTH_ABOVE = 50  # loss curves with more steps get a moving average over the raw values


@dataclass
class CheckpointInfo:
    name: str
    state: dict[str, Any]


@dataclass
class FinetuneRun:
    """A fine-tuning run as found on disk. ``train_dir`` is the folder the trainer wrote (``path`` itself, or its
    ``train/``); ``evaluations`` the records of the evaluations made during training, if any."""

    path: Path
    train_dir: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    log: list[dict[str, Any]]
    checkpoints: list[CheckpointInfo]
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return (self.train_dir / DONE).exists() or (self.path / DONE).exists() or self.result is not None


def training_dir(run_dir: Path) -> Path | None:
    """The folder the trainer wrote: ``run_dir`` itself, or the ``train/`` of a study's sub-run (None: neither)."""
    for folder in (run_dir, run_dir / TRAIN_SUBFOLDER):
        if (folder / TRAIN_LOG).is_file() or (folder / CHECKPOINTS).is_dir():
            return folder
    return None


def read_checkpoints(train_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints (their trainer_state.json is written last), in training order."""
    root = train_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [CheckpointInfo(p.name, read_json(p / STATE_FILE)) for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda c: (int(c.state.get("global_step", 0)), c.state.get("kind") == "epoch"))


def read_finetune_run(run_dir: str | Path) -> FinetuneRun:
    path = Path(run_dir)
    evaluations = read_jsonl(path / SAMPLES) if (path / SAMPLES).is_file() else []
    train_dir = training_dir(path)
    if train_dir is None:
        if not evaluations:
            raise DataError(f"{path} holds no {TRAIN_LOG} and no {CHECKPOINTS}/ (nor a {TRAIN_SUBFOLDER}/ with "
                            "them): training has not written its first step yet; rerun the same command to start it")
        train_dir = path / TRAIN_SUBFOLDER  # a sub-run whose training files are gone: its evaluations remain
    # the trainer's metrics.json; a study keeps a copy of the same result beside train/ (train_result.json)
    result_path = next((p for p in (train_dir / METRICS, path / TRAIN_RESULT) if p.is_file()), None)
    result = read_json(result_path) if result_path is not None else None
    if (train_dir / CONFIG).is_file():
        config = read_yaml(train_dir / CONFIG)
    else:
        config = (result or {}).get("config") or {}
    return FinetuneRun(path=path, train_dir=train_dir, config=config if isinstance(config, dict) else {},
                       result=result, log=read_jsonl(train_dir / TRAIN_LOG), checkpoints=read_checkpoints(train_dir),
                       evaluations=evaluations)


# ---------------------------------------------------------------------------------------------------- page


@dataclass
class EvaluationPoint:
    """One dataset at one evaluation point (an epoch or step tag; None: untagged), counted from its records."""

    point: Any
    dataset: str
    n: int  # judged answers
    correct: int
    unjudged: int  # a judge failed (correct None)
    skipped: int
    captions: int  # caption answers: scored by CIDEr-D in metrics.json, not right / wrong

    def accuracy(self, alpha: float) -> Estimate | None:
        return wilson_interval(self.correct, self.n, 1.0 - alpha) if self.n else None


def evaluation_points(records: Sequence[dict[str, Any]]) -> tuple[str | None, list[EvaluationPoint]]:
    """(the tag key, one point per (tag value, dataset)), in tag order."""
    tag = next((k for k in TAG_KEYS if any(k in r for r in records)), None)
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r.get(tag) if tag else None, str(r.get("dataset"))), []).append(r)
    points = []
    for (point, dataset), mine in groups.items():
        captions = sum(1 for r in mine if r.get("task") == "caption")
        judged = [r for r in mine if not r.get("skipped") and r.get("correct") is not None]
        points.append(EvaluationPoint(
            point, dataset, len(judged), sum(bool(r["correct"]) for r in judged),
            sum(1 for r in mine if not r.get("skipped") and r.get("correct") is None and r.get("task") != "caption"),
            sum(1 for r in mine if r.get("skipped")), captions))
    points.sort(key=lambda p: (p.point is None, p.point if isinstance(p.point, (int, float)) else 0))
    return tag, points


def _loss_figure(log: Sequence[dict[str, Any]]) -> Figure | Paragraph:
    rows = [r for r in log if r.get("loss") is not None]
    if not rows:
        return Paragraph(f"No training step logged yet ({TRAIN_LOG} is empty).")
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    smooth = len(rows) > SMOOTH_ABOVE
    series = [Series("loss per step", steps, loss, marker="" if smooth else "o", emphasis=not smooth)]
    if smooth:
        series.append(Series("moving average", steps, moving_average(loss), marker=""))
    panels = [LinePanel("loss", series, ylabel="loss", xlabel="optimizer step", integer_x=True)]
    lr = [r.get("lr") for r in rows]
    if any(v is not None for v in lr):
        panels.append(LinePanel("learning rate", [Series("learning rate", steps, lr, marker="" if smooth else "o")],
                                ylabel="learning rate", xlabel="optimizer step", integer_x=True))
    png = line_plot(panels, title="Training loss and learning rate", panel_size=(6.0, 3.4), ncols=len(panels))
    return Figure("loss", png, "Training loss of each optimizer step (the mean over its micro-batches)"
                  + ("; faint: raw steps, solid: moving average" if smooth else "")
                  + (", and the learning rate the scheduler set for it." if len(panels) > 1 else "."))


def _training_table(run: FinetuneRun) -> Table:
    result = run.result or {}
    log = run.log
    first = next((r.get("loss") for r in log if r.get("loss") is not None), None)
    last = next((r.get("loss") for r in reversed(log) if r.get("loss") is not None), None)
    trainable, total = result.get("trainable_parameters"), result.get("total_parameters")
    rows = [
        ["status", "finished" if run.done else "unfinished: rerun the same command to continue from the last "
                                                 "checkpoint"],
        ["optimizer steps", str(result.get("global_step", log[-1].get("step") if log else "-"))],
        ["epochs done", str(result.get("epochs_done", "-"))],
        ["trainable parameters", f"{trainable:,} of {total:,} ({100.0 * trainable / max(total, 1):.2f}%)"
         if trainable is not None and total else "-"],
        ["first / last loss", f"{format_number(first, 4)} / {format_number(last, 4)}"],
        ["processes, precision", f"{result.get('num_processes', '-')}, {result.get('mixed_precision', '-')}"],
        ["seconds", format_number(result.get("seconds"), 1)],
    ]
    if result.get("resumed_from"):
        rows.append(["resumed from", str(result["resumed_from"])])
    return Table(["figure", "value"], rows, "From metrics.json (written when training finished) and train_log.jsonl.")


def _checkpoint_table(run: FinetuneRun) -> Table | Paragraph:
    if not run.checkpoints:
        return Paragraph("No complete checkpoint yet (one is written after every epoch).")
    rows = [[c.name, str(c.state.get("kind", "-")), str(c.state.get("global_step", "-")),
             str(c.state.get("epochs_done", "-")), format_number(c.state.get("loss"), 4),
             str(run.train_dir / CHECKPOINTS / c.name)] for c in run.checkpoints]
    return Table(["checkpoint", "kind", "step", "epochs done", "loss", "folder"], rows,
                 "Each complete checkpoint (trained weights, optimizer, scheduler, RNG state); `unforget tailor "
                 "--finetuned FOLDER` grafts one onto its base model.")


def evaluation_blocks(records: Sequence[dict[str, Any]], alpha: float = 0.05,
                      figure: str = "accuracy") -> list[Any]:
    """A table of accuracy per evaluation point (epoch or step tag) and dataset, recomputed from the records, and
    a plot of it over the points when there are several (the figure named ``figure``). Caption sets have no
    right / wrong answers and are left out (their CIDEr-D is in the folder's metrics.json)."""
    tag, points = evaluation_points(records)
    captions = sorted({p.dataset for p in points if p.captions and not p.n})
    points = [p for p in points if p.dataset not in captions]
    if not points:
        if not captions:
            return []
        return [Paragraph(f"Caption sets only ({', '.join(captions)}): scored by CIDEr-D in metrics.json.")]
    names = display_names([p.dataset for p in points])
    estimates = {id(p): p.accuracy(alpha) for p in points}
    rows = [[str(p.point) if tag else "-", names[p.dataset], str(p.n),
             format_interval(e.value, e.low, e.high) if (e := estimates[id(p)]) else "-",
             f"{p.unjudged} / {p.skipped}"] for p in points]
    blocks: list[Any] = [Table([tag or "evaluation", "dataset", "n", "accuracy", "unjudged / skipped"], rows,
                               f"Accuracy of the judged answers with {1 - alpha:.0%} Wilson intervals, recomputed "
                               f"from {SAMPLES}."
                               + (f" Caption sets ({', '.join(captions)}) are scored by CIDEr-D in metrics.json."
                                  if captions else ""))]
    numeric = [p for p in points if isinstance(p.point, (int, float)) and estimates[id(p)] is not None]
    if len({p.point for p in numeric}) > 1:
        series = []
        for dataset in dict.fromkeys(p.dataset for p in numeric):
            mine = [estimates[id(p)] for p in numeric if p.dataset == dataset]
            series.append(Series(names[dataset], [p.point for p in numeric if p.dataset == dataset],
                                 [e.value for e in mine], [e.low for e in mine], [e.high for e in mine]))
        png = line_plot([LinePanel("", series, ylabel="accuracy", xlabel=tag or "", ylim=(-0.03, 1.03),
                                   integer_x=True)], title=f"Accuracy per {tag}", panel_size=(7.0, 3.4))
        blocks.append(Figure(figure, png, f"Accuracy of each evaluated dataset after each {tag}, with "
                                          f"{1 - alpha:.0%} Wilson intervals."))
    return blocks


def training_sections(run: FinetuneRun) -> list[Section]:
    """The loss curve and run figures, and the checkpoints."""
    return [Section("Training", [_loss_figure(run.log), _training_table(run)]),
            Section("Checkpoints", [_checkpoint_table(run)])]


def build_finetune_report(run_dir: str | Path) -> Report:
    run = read_finetune_run(run_dir)
    cfg = run.config
    data = cfg.get("data") or {}
    datasets = [str(d) for d in data.get("datasets") or []]
    names = display_names(datasets)
    method = str(cfg.get("method", (run.result or {}).get("method", "-")))
    options = cfg.get("method_options") or {}
    regularizer = (cfg.get("regularizer") or {}).get("name")
    length = f"{cfg.get('max_steps')} steps" if cfg.get("max_steps") else f"{cfg.get('epochs', '-')} epoch(s)"
    data_text = "-"
    if datasets:
        data_text = (named_refs(datasets, names) + f" ({data.get('split', 'train')} split"
                     + (f", limit {data['limit']}" if data.get("limit") else "") + ")")
    facts = [("run folder", str(run.path))]
    if cfg:
        facts += [("model", str((cfg.get("model") or {}).get("name"))),
                  ("method", method + (f" {options}" if options else "")
                   + (f", regularizer {regularizer}" if regularizer else "")),
                  ("fine-tuning data", data_text),
                  ("schedule", f"{length}, lr {cfg.get('lr') if cfg.get('lr') is not None else 'method default'}, "
                               f"batch {cfg.get('batch_size', '-')} x {cfg.get('grad_accum', 1)} accumulation, "
                               f"seed {cfg.get('seed', '-')}")]
    else:
        facts.append(("method", method))
    if run.train_dir != run.path:
        facts.append(("training folder", str(run.train_dir)))
    study = parent_study(run.path)
    if study is not None:
        facts.append(("part of", f"the {study[0]} study in {study[1]}"))
    title = f"Fine-tuning: {method}" + (f" on {', '.join(names[d] for d in datasets)}" if datasets else
                                        f" ({run.path.name})")
    report = Report(title=title, facts=facts)
    report.sections += training_sections(run)
    report.sections.append(Section("Evaluation during training", evaluation_blocks(run.evaluations) or [Paragraph(
        "This folder holds no evaluation: `unforget finetune` trains only. A study's fine-tuning runs (emt, 2x2, "
        "continual) evaluate after each epoch or step, and their records are reported here; evaluate this run "
        f"with `unforget eval --model {run.path} --datasets ...` (base model plus the trained weights).")]))
    notes = []
    if not run.done:
        notes.append("The run has not finished (no metrics.json yet): the figures above are what it wrote so far.")
    if notes:
        report.sections.append(Section("Notes", [BulletList(notes)]))
    return report


def write_finetune_report(run_dir: str | Path) -> ReportFiles:
    """Write report.html, report.md and plots/ into a fine-tuning run folder (its own files stay as written)."""
    return write_report(build_finetune_report(run_dir), run_dir)


def is_finetune_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "method" in config and "data" in config and "datasets" not in config and "finetuned" not in config


REPORTS.register(ReportKind(
    "finetune", write_finetune_report, is_finetune_run,
    "fine-tuning run: loss curve, checkpoints, evaluations during training"))
