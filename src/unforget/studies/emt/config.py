"""The EMT study's config (``configs/emt/*.yaml``) as dataclasses, and the folder rule of its arms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError
from ...evaluation.config import EvalConfig, LanguageConfig, ProbeConfig
from ...models.config import ModelConfig
from ...training.config import TrainSettings


@dataclass
class MethodRun:
    """One fine-tuning arm of the study. ``name`` labels it in the report (e.g. "lora-r8")."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None  # None: the method's default
    epochs: int | None = None  # None: train.epochs


@dataclass
class EmtTrain(TrainSettings):
    """EMT's ``train:``: the fine-tuning set and the epochs of every arm that names none, besides every shared
    fine-tuning setting (``classes``: class-subset fine-tuning, EMT's minority-collapse analysis)."""

    dataset: str = "digits"  # the fine-tuning set
    epochs: int = 3
    batch_size: int = 16


@dataclass
class EmtConfig:
    name: str = "emt"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: EmtTrain = field(default_factory=EmtTrain)
    methods: list[MethodRun] = field(default_factory=lambda: [MethodRun("projector", "projector"),
                                                              MethodRun("lora", "lora")])
    eval: EvalConfig = field(default_factory=EvalConfig)
    alignment_limit: int = 64  # images per classification set for the alignment analysis (0: off)
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # judge-free KL probe every epoch (probe.enabled)
    # answer log-likelihood and held-out perplexity every epoch, when a "text" set is among eval.datasets
    language: LanguageConfig = field(default_factory=LanguageConfig)
    tensorboard: bool = False  # loss and per-dataset accuracy to <run>/tb (needs the tensorboard package)
    seeds: list[int] = field(default_factory=lambda: [0])
    alpha: float = 0.05  # significance level of the report's claim checks
    out: str | None = None  # default runs/emt/<name>

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("an EMT study needs at least one method under `methods:`")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ConfigError(f"method names must be unique, got {names}")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")


def arm_folder_name(name: str, seed: int, seeds: Sequence[int]) -> str:
    """The folder of the arm ``name`` trained with ``seed``: the name alone when the study has one seed."""
    return name if len(seeds) == 1 else f"{name}-s{seed}"


def arm_folder(run: Path, method: MethodRun, seed: int, seeds: list[int]) -> Path:
    return run / arm_folder_name(method.name, seed, seeds)
