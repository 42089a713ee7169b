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
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from ..config import to_dict
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluation.config import EvalConfig, LanguageConfig, ProbeConfig
from ..models.config import ModelConfig
from ..reports.language import language_row
from ..training.config import TrainSettings
from ..checks import open_checked_run
from ..runs import RunDir, atomic_write_json, read_json, read_jsonl, sub_run
from .base import STUDIES, Study
from .language_scores import record_language, text_dataset
from .probing import base_file, base_probe_pending, load_base_distributions, make_probe, record_probe

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

CELL_KEYS: tuple[str, ...] = ("id_image_id_text", "id_image_ood_text", "ood_image_id_text", "ood_image_ood_text")
TARGET_CELL = "id_image_id_text"
REPLAY_FILE = "replay.jsonl"


@dataclass
class Cells:
    """The four evaluation sets, as dataset references (``scenes-vqa?qtypes=colour``); each is read at ``eval.split``.
    ``id_image_id_text`` is the fine-tuning task itself."""

    id_image_id_text: str = "scenes-vqa?qtypes=colour"
    id_image_ood_text: str = "scenes-vqa?qtypes=shape,count,position"
    ood_image_id_text: str = "easy-vqa?qtypes=colour"
    ood_image_ood_text: str = "shapes"

    def refs(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in CELL_KEYS}

    def validate(self) -> None:
        refs = list(self.refs().values())
        if len(set(refs)) != len(refs):
            raise ConfigError(f"cells must be four different dataset references (records are keyed by them), got "
                              f"{refs}; tell two subsets of one set apart with options, e.g. scenes-vqa?qtypes=colour")


@dataclass
class TwoByTwoTrain(TrainSettings):
    """The 2x2 study's ``train:``: the fine-tuning set, besides every shared fine-tuning setting (the sweep decides
    methods, learning rates and epochs)."""

    dataset: str | None = None  # the fine-tuning set; None: the target cell's reference (at `split`)
    limit: int | None = 256  # fine-tuning examples of a sweep run, drawn as `sampling` says
    batch_size: int = 16


@dataclass
class SweepMethod:
    """A fine-tuning method of the sweep; ``name`` labels it (``lora-r4``), ``options`` are the method's."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogGrid:
    """``points`` learning rates spaced evenly in log scale from ``low`` to ``high``."""

    low: float = 1e-5
    high: float = 1e-3
    points: int = 3

    def values(self) -> list[float]:
        if not 0 < self.low <= self.high or self.points < 1:
            raise ConfigError(f"sweep.lr_grid needs 0 < low <= high and points >= 1, got {self}")
        if self.points == 1:
            return [float(self.low)]
        return [float(f"{v:.6g}") for v in np.geomspace(self.low, self.high, self.points)]


@dataclass
class SweepConfig:
    methods: list[SweepMethod] = field(default_factory=lambda: [SweepMethod("projector", "projector"),
                                                                SweepMethod("lora-r8", "lora", {"r": 8})])
    lrs: list[float] = field(default_factory=list)  # explicit learning rates (with lr_grid: both)
    lr_grid: LogGrid | None = None
    epochs: list[int] = field(default_factory=lambda: [1])

    def learning_rates(self) -> list[float | None]:
        """The sorted learning rates; ``[None]`` (each method's default) when none is given."""
        lrs = sorted({float(x) for x in self.lrs} | set(self.lr_grid.values() if self.lr_grid else []))
        return list(lrs) or [None]

    def validate(self) -> None:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ConfigError(f"sweep.methods names must be unique, got {names}")
        if any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"sweep.lrs must be > 0, got {self.lrs}")
        if any(e < 1 for e in self.epochs) or not self.epochs:
            raise ConfigError(f"sweep.epochs must list epochs >= 1, got {self.epochs}")


@dataclass
class HybridSource:
    """Other data mixed into the fine-tuning set. ``replay: true`` trains on the base model's own answers to
    ``dataset``'s questions instead of its references (generated once, cached in the run folder)."""

    name: str
    dataset: str
    replay: bool = False
    weight: float = 1.0  # the source's part of the share r, against the other sources
    split: str = "train"


@dataclass
class HybridConfig:
    """Data-hybrid training: for each ratio r, a run whose ``budget`` examples are (1 - r) fine-tuning task and r
    other data (``sources``, split by weight). An empty ``sources`` or ``ratios`` turns it off."""

    sources: list[HybridSource] = field(default_factory=list)
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])
    budget: int | None = None  # examples per epoch; None: train.limit
    mix_by: list[Literal["sample", "batch"]] = field(default_factory=lambda: ["sample"])
    mix_strategy: Literal["interleave_under", "interleave_over"] = "interleave_under"
    method: SweepMethod | None = None  # None: the first sweep method
    lr: float | None = None  # None: the largest sweep learning rate (where forgetting shows most)
    epochs: int | None = None  # None: the largest sweep epochs

    def enabled(self) -> bool:
        return bool(self.sources) and bool(self.ratios)

    def validate(self) -> None:
        if any(not 0.0 <= r < 1.0 for r in self.ratios):
            raise ConfigError(f"hybrid.ratios must lie in [0, 1), got {self.ratios}")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"hybrid.sources names must be unique, got {names}")
        if any(s.weight <= 0 for s in self.sources):
            raise ConfigError("hybrid.sources weights must be > 0")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"hybrid.budget must be >= 1, got {self.budget}")
        if not self.mix_by:
            raise ConfigError("hybrid.mix_by must list sample and/or batch")


@dataclass
class TwoByTwoConfig:
    name: str = "2x2"
    model: ModelConfig = field(default_factory=ModelConfig)
    cells: Cells = field(default_factory=Cells)
    train: TwoByTwoTrain = field(default_factory=TwoByTwoTrain)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # eval.datasets is set from `cells` and extra_datasets
    # evaluated beside the four cells, outside the grid: [text] measures language forgetting (accuracy on the text set
    # and, with language.enabled, answer log-likelihood and held-out perplexity)
    extra_datasets: list[str] = field(default_factory=list)
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # judge-free KL probe of the base model and every run
    language: LanguageConfig = field(default_factory=LanguageConfig)
    seed: int = 0
    alpha: float = 0.05  # significance level of the claim checks
    margin: float = 0.05  # the largest accuracy change that still counts as "no forgetting" / "the gain stays"
    out: str | None = None  # default runs/2x2/<name>

    def validate(self) -> None:
        cells = list(self.cells.refs().values())
        if set(self.extra_datasets) & set(cells) or len(set(self.extra_datasets)) != len(self.extra_datasets):
            raise ConfigError(f"extra_datasets must differ from each other and from the cells, got "
                              f"{self.extra_datasets}")
        self.eval.datasets = cells + list(self.extra_datasets)
        if not self.sweep.methods and not self.hybrid.enabled():
            raise ConfigError("a 2x2 study needs sweep.methods or hybrid.sources + hybrid.ratios: nothing to train")
        if self.hybrid.enabled() and self.hybrid.budget is None and self.train.limit is None:
            raise ConfigError("hybrid training needs a fixed budget: set hybrid.budget or train.limit")
        if self.hybrid.enabled() and self.hybrid.method is None and not self.sweep.methods:
            raise ConfigError("hybrid.method is not set and there is no sweep method to take it from")
        if not 0 < self.alpha < 1 or not 0 < self.margin < 1:
            raise ConfigError(f"alpha and margin must lie in (0, 1), got alpha={self.alpha}, margin={self.margin}")


# ------------------------------------------------------------------------------------------------- the plan


@dataclass
class RunSpec:
    """One fine-tuning run of the study: where it lives, how it trains and on what."""

    name: str  # its folder under the run folder (sweep/..., hybrid/...)
    kind: Literal["sweep", "hybrid"]
    method: SweepMethod
    lr: float | None
    epochs: int
    datasets: list[str]  # training sources; for hybrid runs the task first, then the other data
    interleave_probs: list[float] | None = None
    budget: int | None = None
    mix_by: str = "sample"
    ratio: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def train_dataset(cfg: TwoByTwoConfig) -> str:
    return cfg.train.dataset or cfg.cells.id_image_id_text


def lr_label(lr: float | None) -> str:
    return "default" if lr is None else f"{lr:g}"


def sweep_plan(cfg: TwoByTwoConfig) -> list[RunSpec]:
    """Every sweep run: methods x learning rates x epochs, in that nesting."""
    return [RunSpec(f"sweep/{m.name}-lr{lr_label(lr)}-e{e}", "sweep", m, lr, e, [train_dataset(cfg)])
            for m in cfg.sweep.methods for lr in cfg.sweep.learning_rates() for e in cfg.sweep.epochs]


def hybrid_probs(ratio: float, weights: list[float]) -> list[float]:
    """Shares of (task, source 1, ..., source k): 1 - r for the task, r split by weight among the sources."""
    total = sum(weights)
    return [1.0 - ratio, *(ratio * w / total for w in weights)]


def hybrid_plan(cfg: TwoByTwoConfig, replay_refs: dict[str, str] | None = None) -> list[RunSpec]:
    """One run per (ratio, mix_by); ratio 0 (the task alone at the same budget) once. ``replay_refs``: source name ->
    the cached replay set's reference (the source's own dataset stands in until it exists)."""
    h = cfg.hybrid
    if not h.enabled():
        return []
    method = h.method or cfg.sweep.methods[0]
    lrs = [lr for lr in cfg.sweep.learning_rates() if lr is not None]
    lr = h.lr if h.lr is not None else (max(lrs) if lrs else None)
    epochs = h.epochs or max(cfg.sweep.epochs)
    budget = h.budget or cfg.train.limit
    refs = [(replay_refs or {}).get(s.name, s.dataset) for s in h.sources]
    specs = []
    for ratio in sorted(set(h.ratios)):
        for mix_by in (["sample"] if ratio == 0 else list(dict.fromkeys(h.mix_by))):
            name = "hybrid/r0" if ratio == 0 else f"hybrid/r{ratio:g}" + (f"-{mix_by}" if len(h.mix_by) > 1 else "")
            specs.append(RunSpec(name, "hybrid", method, lr, epochs, [train_dataset(cfg), *refs],
                                 hybrid_probs(ratio, [s.weight for s in h.sources]), budget, mix_by, ratio))
    return specs


def replay_counts_needed(cfg: TwoByTwoConfig) -> dict[str, int]:
    """Source name -> how many replayed answers the largest ratio needs (interleave counts at the budget)."""
    from ..training.mixing import largest_remainder

    h = cfg.hybrid
    budget = h.budget or cfg.train.limit or 0
    need: dict[str, int] = {}
    for ratio in h.ratios:
        counts = largest_remainder(budget, hybrid_probs(ratio, [s.weight for s in h.sources]))
        for s, n in zip(h.sources, counts[1:]):
            if s.replay:
                need[s.name] = max(need.get(s.name, 0), n)
    return need


def eval_config(cfg: TwoByTwoConfig) -> EvalConfig:
    return replace(cfg.eval, model=cfg.model, datasets=[*cfg.cells.refs().values(), *cfg.extra_datasets])


# ------------------------------------------------------------------------------------------------- running


def run_twobytwo(cfg: TwoByTwoConfig, progress: ProgressFn | None = None) -> Path:
    out = Path(cfg.out or Path("runs") / "2x2" / cfg.name)
    root = open_checked_run(out, "2x2", cfg)
    root.write_config(cfg)
    write_cell_names(cfg, root)
    ev = eval_config(cfg)
    base_run = sub_run(out, "base", "eval")
    need_replay = {name: n for name, n in replay_counts_needed(cfg).items() if n > 0} if cfg.hybrid.enabled() else {}
    replay_refs = {name: replay_reference(out / "replay" / name) for name in need_replay}
    todo_replay = [s for s in cfg.hybrid.sources if s.name in need_replay
                   and not _replay_ready(out / "replay" / s.name, need_replay[s.name])]
    # the probe on the four cells, label tokens of the fine-tuning set; base distributions once, in the folder
    probe = make_probe(cfg.probe, list(cfg.cells.refs().values()), train_dataset(cfg))
    text = text_dataset(cfg.language, ev.datasets)
    language_pending = text is not None and language_row(base_run.path, epoch=0) is None
    if not _evaluated(base_run, ev) or todo_replay or base_probe_pending(probe, out, base_run, {"epoch": 0}) \
            or language_pending:
        from ..evaluation.evaluator import evaluate
        from ..models.loading import load_configured_model

        lm = load_configured_model(cfg.model)
        if probe is not None:
            probe.prepare(lm, base_file(out))
            record_probe(probe, lm, base_run, {"epoch": 0}, 1.0 - cfg.alpha)
        language = record_language(cfg.language, text, lm, base_run, {"epoch": 0}, 1.0 - cfg.alpha)
        if not _evaluated(base_run, ev):
            log.info("evaluating the base model on the four cells")
            result = evaluate(ev, lm=lm, run=base_run, progress=_prefixed(progress, "base"), tag={"epoch": 0})
            base_run.write_metrics({"epoch": 0, **result.to_dict(), **({"language": language} if language else {})})
            base_run.mark_done()
        for source in todo_replay:
            write_replay_set(lm, source, need_replay[source.name], sub_run(out, Path("replay") / source.name, "eval"), ev,
                             _prefixed(progress, f"replay {source.name}"))
        del lm
        _free_memory()

    # the vision encoder baselines of classification cells are the base model's; runs do not repeat them
    run_ev = replace(ev, baselines=[])
    for spec in [*sweep_plan(cfg), *hybrid_plan(cfg, replay_refs)]:
        sub = sub_run(out, spec.name, "eval")
        if _evaluated(sub, run_ev):
            log.info("%s: done, skipped", spec.name)
            continue
        _run_spec(cfg, spec, sub, run_ev, progress, probe)
        sub.mark_done()
        _free_memory()

    from ..reports.twobytwo import write_twobytwo_report

    write_twobytwo_report(out)
    return out


def write_cell_names(cfg: TwoByTwoConfig, root: RunDir) -> dict[str, str]:
    """Cell -> the name its records carry (the loaded dataset's name), written to ``cells.json`` for the report.

    Records are told apart by that name: a dataset loaded from a path is named by its reference (two
    ``jsonl:.../test.jsonl`` files stay apart), so only two cells given the very same reference collide, an
    error."""
    names = {key: load_dataset(ref).name for key, ref in cfg.cells.refs().items()}
    if len(set(names.values())) < len(names):
        raise ConfigError(f"two cells load as datasets of the same name ({names}), so their answers could not be "
                          "told apart; give each a distinct reference, e.g. jsonl:/data/task/test.jsonl?name=task")
    for key, name in names.items():
        if name != getattr(cfg.cells, key):
            log.warning("cell %s loads as dataset '%s', not as its reference: an interrupted evaluation of it "
                        "starts that cell over; add an option (?name=%s) to name it by its reference", key, name, name)
    atomic_write_json(root.file("cells.json"), {key: {"ref": getattr(cfg.cells, key), "dataset": name}
                                                for key, name in names.items()})
    return names


def _evaluated(run: RunDir, ev: EvalConfig) -> bool:
    """DONE, and its metrics cover every cell (a cell added to the config later is evaluated then)."""
    if not run.is_done():
        return False
    metrics = run.read_metrics() or {}
    datasets = (metrics.get("eval") or metrics).get("datasets") or {}
    return all(ref in datasets for ref in ev.datasets)


def _replay_ready(folder: Path, count: int) -> bool:
    """A finished replay set with at least ``count`` answers (a larger ratio or budget later asks for more)."""
    meta = folder / "meta.json"
    return (folder / "DONE").exists() and meta.exists() and read_json(meta).get("answers", 0) >= count


def _run_spec(cfg: TwoByTwoConfig, spec: RunSpec, sub: RunDir, ev: EvalConfig, progress: ProgressFn | None,
              probe: Any = None) -> None:
    from ..evaluation.evaluator import evaluate
    from ..training.methods.base import METHODS
    from ..training.trainer import finetune

    t = cfg.train
    if spec.kind == "hybrid":  # its size is the budget of the mix, not a number per dataset
        data = t.data_config(spec.datasets, limit=None, mix_strategy=cfg.hybrid.mix_strategy,
                             interleave_probs=spec.interleave_probs, budget=spec.budget, mix_by=spec.mix_by)
    else:
        data = t.data_config(spec.datasets)
    lr = spec.lr if spec.lr is not None else METHODS.get(spec.method.method).default_lr
    atomic_write_json(sub.file("spec.json"), {**spec.to_dict(), "lr": lr, "seed": cfg.seed})
    ft = t.finetune_config(model=cfg.model, data=data, method=spec.method.method, method_options=spec.method.options,
                           lr=lr, epochs=spec.epochs, seed=cfg.seed, out=str(sub.path / "train"))
    log.info("%s: %s, lr %g, %d epoch(s), data %s", spec.name, spec.method.name, lr, spec.epochs, spec.datasets)
    result = finetune(ft, progress=_prefixed(progress, f"{spec.name} train"))
    evaluation = evaluate(ev, lm=result.lm, run=sub, progress=_prefixed(progress, spec.name),
                          tag={"epoch": result.epochs_done})
    probed = None
    if probe is not None:
        load_base_distributions(probe, result.lm, sub.path.parents[1])
        probed = record_probe(probe, result.lm, sub, {"epoch": result.epochs_done}, 1.0 - cfg.alpha)
    language = record_language(cfg.language, text_dataset(cfg.language, ev.datasets), result.lm, sub,
                               {"epoch": result.epochs_done}, 1.0 - cfg.alpha)
    sub.write_metrics({
        **spec.to_dict(), "lr": lr, "seed": cfg.seed, "epochs_done": result.epochs_done,
        "trainable_parameters": result.trainable_parameters, "total_parameters": result.total_parameters,
        "final_loss": result.final_loss, "train_seconds": result.seconds, "train_examples": _train_examples(data),
        "eval": evaluation.to_dict(), "probe": probed, "language": language,
    })


def _train_examples(data: Any) -> dict[str, int]:
    """How many examples each training source gave (after mixing), from the training log's counts."""
    from ..training.data import describe_items, training_items

    items, _ = training_items(data)
    return describe_items(items)


# ------------------------------------------------------------------------------------------------- replay


def replay_reference(folder: Path) -> str:
    """The dataset reference of a cached replay set (a JSONL VQA file whose rows are the train split)."""
    return f"jsonl:{(folder / REPLAY_FILE).resolve()}?split=train&id_column=id"


def write_replay_set(lm: Any, source: HybridSource, count: int, run: RunDir, ev: EvalConfig,
                     progress: ProgressFn | None = None) -> None:
    """The base model's greedy answers to the first questions of ``source`` (``count`` non-empty ones), as a JSONL
    VQA set in ``run``: images as PNGs, one row per answer. Appended as it goes; a rerun continues."""
    from ..evaluation.generation import GenerationRequest, generate_answers
    from ..training.data import question_of

    ds = load_dataset(source.dataset)
    samples = ds.split(source.split)
    done = {r["id"]: r for r in read_jsonl(run.file(REPLAY_FILE))}
    kept = sum(1 for r in done.values() if r["answer"])
    images = run.path / "images"
    images.mkdir(exist_ok=True)
    position = 0
    with run.appender(REPLAY_FILE) as app:
        while kept < count and position < len(samples):
            chunk = min(ev.batch_size * 4, count - kept)  # no more than still needed: empty answers ask for more
            batch = [(i, s) for i, s in enumerate(samples[position: position + chunk], start=position)
                     if s.id not in done]
            position += chunk
            if not batch:
                continue
            loaded = [s.load_image(ds.name) for _, s in batch]
            questions = [question_of(ds, s, i, "round-robin") for i, s in batch]
            answers = generate_answers(lm, [GenerationRequest(q, im) for q, im in zip(questions, loaded)],
                                       batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens)
            for (i, s), image, question, answer in zip(batch, loaded, questions, answers):
                file = images / f"{i:06d}.png"
                image.save(file)
                # an empty answer cannot be a training target: it is recorded (so a rerun skips it) and not used
                app.write({"id": s.id, "image": f"images/{file.name}", "question": question, "answer": answer,
                           "reference": ds.reference(s), "source": source.dataset})
                kept += bool(answer)
            if progress:
                progress("replay", min(kept, count), count)
    if kept < count:
        raise ConfigError(f"replay source '{source.name}' ({source.dataset}, split {source.split}) gave {kept} "
                          f"non-empty base-model answers, fewer than the {count} the largest ratio needs; "
                          "lower hybrid.budget or the ratios, or use a larger set")
    rows = [r for r in read_jsonl(run.file(REPLAY_FILE)) if r["answer"]]
    _rewrite_usable(run, rows)
    atomic_write_json(run.file("meta.json"), {"source": to_dict(source), "count": count, "answers": len(rows),
                                              "model": ev.model.name, "max_new_tokens": ev.max_new_tokens,
                                              "agree_with_reference": _agreement(rows)})
    run.mark_done()


def _rewrite_usable(run: RunDir, rows: list[dict[str, Any]]) -> None:
    """replay.jsonl keeps the rows with an answer only, so that it loads as a dataset."""
    from ..runs import atomic_write_text, dumps_strict

    atomic_write_text(run.file(REPLAY_FILE), "".join(dumps_strict(r, ensure_ascii=False) + "\n" for r in rows))


def _agreement(rows: list[dict[str, Any]]) -> float | None:
    """Share of replayed answers equal to the reference (case and spaces aside): how far replay is from the labels."""
    if not rows:
        return None
    same = sum(" ".join(str(r["answer"]).lower().split()) == " ".join(str(r["reference"]).lower().split())
               for r in rows)
    return same / len(rows)


# ------------------------------------------------------------------------------------------------- helpers


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda label, done, total: progress(f"{prefix} {label}" if label != "train" else prefix, done, total)


STUDIES.register("2x2", Study("2x2", TwoByTwoConfig, run_twobytwo,
                              "2x2 ID/OOD image x text: regularisation sweeps and data-hybrid training"),
                 description="2x2 ID/OOD image x text cells; lr / method sweeps (Pareto), data-hybrid training")

__all__ = ["Cells", "HybridConfig", "HybridSource", "LogGrid", "RunSpec", "SweepConfig", "SweepMethod",
           "TwoByTwoConfig", "TwoByTwoTrain", "hybrid_plan", "run_twobytwo", "sweep_plan"]
