"""The Model Tailor study's config: the targets to fine-tune on, the tailoring methods to compare, the sparsities
they sweep, the calibration and the paper's headline bar."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...data.sampling import SamplingStrategy
from ...errors import ConfigError
from ...evaluation.config import EvalConfig
from ...models.config import ModelConfig
from ...tailoring import TAILORING_METHODS
from ...training.config import MethodTrainSettings

MULTI = "multi"  # the group that grafts every target at once
RESERVED = {MULTI, "base", "finetune", "plots"}


@dataclass
class TargetTask:
    """A task the base model is fine-tuned on. ``checkpoint``: a fine-tuned model to use instead of fine-tuning
    (HF folder, peft adapter, projector checkpoint, ``unforget finetune`` checkpoint or run folder)."""

    name: str
    dataset: str
    checkpoint: str | None = None


@dataclass
class TailorTrain(MethodTrainSettings):
    """How each target without a ``checkpoint`` is fine-tuned (``limit``: training samples per target)."""

    seed: int = 0


@dataclass
class TailoringArm:
    """One tailoring method. ``sweep``: run it at every study sparsity (None: as the method is registered, i.e.
    the grafting methods model-tailor and magnitude); the others run once at their ``options``."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    sweep: bool | None = None

    @property
    def sweeps(self) -> bool:
        return self.sweep if self.sweep is not None else TAILORING_METHODS.get(self.method).sweeps_sparsity


@dataclass
class StudyCalibration:
    split: str = "train"  # calibration samples: ``limit`` of each target's split, drawn as ``sampling`` says
    limit: int = 64
    sampling: SamplingStrategy = "stratified"
    batch_size: int = 4
    template: int | str = 0


@dataclass
class HeadlineCheck:
    """The paper's claim: at sparsity <= ``sparsity`` Model Tailor keeps >= ``keep`` of the base model on the
    original tasks and reaches >= ``reach`` of the fine-tuned model on the target task."""

    sparsity: float = 0.1
    keep: float = 0.99
    reach: float = 0.97


def _default_arms() -> list[TailoringArm]:
    return [TailoringArm("model-tailor", "model-tailor"), TailoringArm("magnitude", "magnitude"),
            TailoringArm("average", "average"), TailoringArm("task-arithmetic", "task-arithmetic"),
            TailoringArm("ties", "ties"), TailoringArm("dare", "dare")]


@dataclass
class TailorStudyConfig:
    name: str = "tailor"
    model: ModelConfig = field(default_factory=ModelConfig)
    original: list[str] = field(default_factory=lambda: ["shapes", "digits"])  # tasks the base model should keep
    targets: list[TargetTask] = field(default_factory=lambda: [TargetTask("vqa", "scenes-vqa")])
    train: TailorTrain = field(default_factory=TailorTrain)
    sparsities: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2])
    methods: list[TailoringArm] = field(default_factory=_default_arms)
    single_task: bool = True  # tailor each target on its own
    multi_task: bool = True  # and all targets onto one base (with two or more targets)
    modules: list[str] | None = None  # tensor-name patterns; None: language-model blocks and projector
    calib: StudyCalibration = field(default_factory=StudyCalibration)
    device: str = "auto"  # where calibration and compensation run
    eval: EvalConfig = field(default_factory=EvalConfig)  # datasets are set per run (original + targets)
    save_patches: bool = True  # keep patch.safetensors per sub-run (a merge's patch is dense: a model's size)
    headline: HeadlineCheck = field(default_factory=HeadlineCheck)
    alpha: float = 0.05  # intervals at 1 - alpha
    out: str | None = None  # default runs/tailor/<name>

    def validate(self) -> None:
        if not self.targets:
            raise ConfigError("a tailor study needs at least one target under `targets:`")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names) or RESERVED & set(names):
            raise ConfigError(f"target names must be unique and not {sorted(RESERVED)}, got {names}")
        if not self.original:
            raise ConfigError("list the original tasks the base model should keep under `original:`")
        if not self.methods:
            raise ConfigError("a tailor study needs at least one method under `methods:`")
        arms = [m.name for m in self.methods]
        if len(set(arms)) != len(arms):
            raise ConfigError(f"method names must be unique, got {arms}")
        if any(not 0.0 < s <= 1.0 for s in self.sparsities):
            raise ConfigError(f"sparsities are fractions in (0, 1], got {self.sparsities}")
        if not (self.single_task or (self.multi_task and len(self.targets) > 1)):
            raise ConfigError("nothing to tailor: set single_task: true, or multi_task: true with two or more targets")
        for arm in self.methods:
            TAILORING_METHODS.get(arm.method)


__all__ = ["HeadlineCheck", "MULTI", "RESERVED", "StudyCalibration", "TailorStudyConfig", "TailorTrain",
           "TailoringArm", "TargetTask"]
