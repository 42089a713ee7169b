"""The continual study's config (``configs/continual/*.yaml``) as dataclasses, and the settings derived from it
for every evaluation and for each task's default fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ...errors import ConfigError
from ...evaluation.config import EvalConfig, ProbeConfig
from ...models.config import ModelConfig
from ...training.config import MethodTrainSettings, RegularizerConfig
from .layout import BASE_DIR
from .strategies import STRATEGIES, TrainPlan


@dataclass
class ContinualTrain(MethodTrainSettings):
    """How every task is fine-tuned unless its strategy says otherwise (``regularised`` sets its own recipe)."""

    method_options: dict[str, Any] = field(default_factory=lambda: {"r": 8})
    limit: int | None = 256  # training samples per task, drawn as `sampling` says
    batch_size: int = 16


@dataclass
class StrategyRun:
    """One arm of the study: a registered strategy (``unforget ls``) under a name, with its options."""

    name: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)


def _default_strategies() -> list[StrategyRun]:
    return [StrategyRun("naive", "naive"), StrategyRun("regularised", "regularised"), StrategyRun("replay", "replay"),
            StrategyRun("ewc", "ewc"), StrategyRun("lwf", "lwf"), StrategyRun("model-tailor", "model-tailor")]


@dataclass
class ContinualConfig:
    name: str = "continual"
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: list[str] = field(default_factory=lambda: ["digits", "shapes", "letters", "scenes-vqa"])  # in order
    train: ContinualTrain = field(default_factory=ContinualTrain)
    strategies: list[StrategyRun] = field(default_factory=_default_strategies)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(limit=100))  # its datasets are the tasks
    # judge-free KL probe after every step, on the tasks' test sets (label mass only with probe.label_set)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    alpha: float = 0.05  # significance level of the claim checks; intervals at 1 - alpha
    n_resamples: int = 2000  # bootstrap resamples of the continual metrics' intervals
    keep_checkpoints: bool = True  # false: delete each step's training checkpoints once its weights are saved
    out: str | None = None  # default runs/continual/<name>

    def validate(self) -> None:
        if not self.tasks:
            raise ConfigError("a continual study needs at least one task under `tasks:` (dataset references)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be different dataset references, got {self.tasks}")
        if not self.strategies:
            raise ConfigError("a continual study needs at least one strategy under `strategies:`")
        names = [s.name for s in self.strategies]
        if len(set(names)) != len(names):
            raise ConfigError(f"strategy names must be unique, got {names}")
        bad = [n for n in names if not n or "/" in n or n.startswith(".") or n == BASE_DIR]
        if bad:
            raise ConfigError(f"strategy names become folder names: '{bad[0]}' is not usable (no '/', no leading "
                              f"'.', not '{BASE_DIR}')")
        for s in self.strategies:
            STRATEGIES.get(s.strategy).parse_options(s.options)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n_resamples < 100:
            raise ConfigError(f"n_resamples must be >= 100, got {self.n_resamples}")


def eval_config(cfg: ContinualConfig) -> EvalConfig:
    """Every evaluation of the study: the study's eval settings on the tasks' test sets."""
    return replace(cfg.eval, model=cfg.model, datasets=list(cfg.tasks), leak_labels=[], baselines=[])


def default_plan(cfg: ContinualConfig, index: int) -> TrainPlan:
    """Task ``index`` fine-tuned alone with the study's train settings (what a strategy starts from)."""
    t = cfg.train
    data = t.data_config([cfg.tasks[index]])
    data.validate()
    return TrainPlan(data=data, method=t.method, method_options=dict(t.method_options), lr=t.lr, epochs=t.epochs,
                     regularizer=RegularizerConfig())
