"""The 2x2 study's config: the four cells, the fine-tuning settings, the regularisation sweep and data-hybrid
training (what each field means: the study's layout in :mod:`unforget.studies.twobytwo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ...errors import ConfigError
from ...evaluation.config import EvalConfig, LanguageConfig, ProbeConfig
from ...models.config import ModelConfig
from ...training.config import TrainSettings

CELL_KEYS: tuple[str, ...] = ("id_image_id_text", "id_image_ood_text", "ood_image_id_text", "ood_image_ood_text")
TARGET_CELL = "id_image_id_text"
OTHER_CELLS: tuple[str, ...] = CELL_KEYS[1:]
OOD_IMAGE_CELLS: tuple[str, ...] = ("ood_image_id_text", "ood_image_ood_text")
CELL_LABELS = {
    "id_image_id_text": "ID image + ID text (target)",
    "id_image_ood_text": "ID image + OOD text",
    "ood_image_id_text": "OOD image + ID text",
    "ood_image_ood_text": "OOD image + OOD text",
}


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
