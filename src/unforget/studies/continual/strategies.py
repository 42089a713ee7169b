"""How the continual study trains each task of its sequence: the strategies, registered by name.

A strategy is an options dataclass, ``plan(step, options) -> TrainPlan`` (the data, method, learning rate and
loss regularizer of task t's fine-tuning, starting from the study's defaults in ``step.default``) and, optionally,
``after_training(step, options, lm, before) -> summary`` (an edit of the trained model in place, e.g. Model
Tailor's graft; ``before`` holds the running model's tensors before task t). As a peft tuner is one folder, a
strategy is one :class:`Strategy` registered in :data:`STRATEGIES`; adding one is one more registration in this
module.

Built in:

- ``naive``: sequential fine-tuning, each task with the study's train settings;
- ``regularised``: the few-parameter / low-learning-rate recipe (by default LoRA r 4 at lr 2e-5; configurable);
- ``replay``: data-hybrid training, each task mixed with a replay buffer of ``buffer_size`` training examples of the
  earlier tasks (an equal share each: their first examples);
- ``ewc``: EWC penalty with the diagonal Fisher of the previous task's training data (from task 1 on);
- ``l2``: a pull towards the weights the task starts from (from task 0: the base model);
- ``lwf``: Learning without Forgetting, distillation from the model the task starts from (from task 0);
- ``model-tailor``: after each task, only a sparse Model Tailor patch of the task's fine-tuning is grafted onto
  the running model (calibrated on that task's training split).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from ...config import from_dict, to_dict
from ...data import load_dataset
from ...errors import ConfigError
from ...models.loading import LoadedModel
from ...registry import Registry
from ...tailoring import TAILORING_METHODS, tailor
from ...tailoring.checkpoints import StateDictCheckpoint
from ...training.config import RegularizerConfig, TrainDataConfig
from ...training.data import select_training_samples
from ...training.regularizers import instruction_batches

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class TrainPlan:
    """One task's fine-tuning: what ``FinetuneConfig`` gets from the strategy."""

    data: TrainDataConfig
    method: str
    method_options: dict[str, Any]
    lr: float | None
    epochs: int
    regularizer: RegularizerConfig


@dataclass(frozen=True)
class Step:
    """Task ``index`` of the sequence ``tasks`` (dataset references); ``default`` is the study's plan for it alone."""

    index: int
    tasks: tuple[str, ...]
    folder: Path
    default: TrainPlan

    @property
    def task(self) -> str:
        return self.tasks[self.index]

    @property
    def earlier(self) -> tuple[str, ...]:
        return self.tasks[: self.index]


AfterTraining = Callable[[Step, Any, "LoadedModel", Mapping[str, "torch.Tensor"]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Strategy:
    name: str
    options_class: type
    plan: Callable[[Step, Any], TrainPlan]
    after_training: AfterTraining | None = None

    def parse_options(self, options: Mapping[str, Any] | None) -> Any:
        return from_dict(self.options_class, dict(options or {}), where=f"strategies.options ({self.name})")


# a strategy registers itself, here or in a new module of this folder: the first lookup imports them all
STRATEGIES: Registry[Strategy] = Registry("continual strategy", package="unforget.studies.continual")


def _regularized(plan: TrainPlan, name: str, options: Any) -> TrainPlan:
    return replace(plan, regularizer=RegularizerConfig(name, to_dict(options)))


# ------------------------------------------------------------------------------------------------------ naive


@dataclass
class NoOptions:
    """No options: the study's train settings."""


STRATEGIES.register("naive", Strategy("naive", NoOptions, lambda step, options: step.default),
                    description="sequential fine-tuning: each task in turn with the study's train settings")


# ------------------------------------------------------------------------------------------------ regularised


@dataclass
class RegularisedOptions:
    """The recipe: a method that trains few parameters (projector, small-rank lora) at a low learning rate."""

    method: str = "lora"
    method_options: dict[str, Any] = field(default_factory=lambda: {"r": 4})
    lr: float = 2e-5
    epochs: int | None = None  # None: the study's

    def validate(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"regularised: lr must be > 0, got {self.lr}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"regularised: epochs must be >= 1, got {self.epochs}")


def plan_regularised(step: Step, options: RegularisedOptions) -> TrainPlan:
    return replace(step.default, method=options.method, method_options=dict(options.method_options), lr=options.lr,
                   epochs=options.epochs or step.default.epochs)


STRATEGIES.register("regularised", Strategy("regularised", RegularisedOptions, plan_regularised),
                    description="few trained parameters at a low learning rate (default: LoRA r 4, lr 2e-5)")


# ----------------------------------------------------------------------------------------------------- replay


@dataclass
class ReplayOptions:
    buffer_size: int = 64  # training examples of the earlier tasks added to each task (an equal share each)

    def validate(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"replay: buffer_size must be >= 1, got {self.buffer_size}")


def training_set_size(data: TrainDataConfig, ref: str) -> int:
    return len(select_training_samples(load_dataset(ref), data))


def plan_replay(step: Step, options: ReplayOptions) -> TrainPlan:
    """The task's examples in full plus ``buffer_size`` examples of the earlier tasks, shared equally (mixed with
    ``interleave_under``: shares are exact, nothing repeats)."""
    plan = step.default
    if not step.earlier:
        return plan
    current = training_set_size(plan.data, step.task)
    per_task = options.buffer_size / len(step.earlier)
    for ref in step.earlier:
        available = training_set_size(plan.data, ref)
        if available < per_task:
            raise ConfigError(f"replay: buffer_size {options.buffer_size} asks {per_task:g} examples of '{ref}' "
                              f"per task, which has {available} to train on (train.limit); lower buffer_size")
    data = replace(plan.data, datasets=[step.task, *step.earlier], mix_strategy="interleave_under",
                   interleave_probs=[float(current)] + [per_task] * len(step.earlier),
                   budget=current + options.buffer_size)
    return replace(plan, data=data)


STRATEGIES.register("replay", Strategy("replay", ReplayOptions, plan_replay),
                    description="data-hybrid: each task mixed with a replay buffer of earlier tasks' examples")


# --------------------------------------------------------------------------------------------- ewc, l2, lwf


@dataclass
class EwcStrategyOptions:
    strength: float = 100.0  # lambda
    fisher_tasks: Literal["previous", "all"] = "previous"  # whose training data the Fisher is taken on
    fisher_samples: int = 64  # training samples of each such task (drawn as train.sampling draws train.limit)
    fisher_batch_size: int = 1

    def validate(self) -> None:
        if self.fisher_samples < 1 or self.fisher_batch_size < 1:
            raise ConfigError("ewc: fisher_samples and fisher_batch_size must be >= 1")


def plan_ewc(step: Step, options: EwcStrategyOptions) -> TrainPlan:
    if not step.earlier:
        return step.default  # no earlier task whose Fisher could be taken
    data = [step.tasks[step.index - 1]] if options.fisher_tasks == "previous" else list(step.earlier)
    regularizer = RegularizerConfig("ewc", {"strength": options.strength, "data": data,
                                            "split": step.default.data.split, "limit": options.fisher_samples,
                                            "batch_size": options.fisher_batch_size})
    return replace(step.default, regularizer=regularizer)


@dataclass
class L2StrategyOptions:
    strength: float = 1.0


@dataclass
class LwfStrategyOptions:
    strength: float = 1.0
    temperature: float = 2.0


STRATEGIES.register("ewc", Strategy("ewc", EwcStrategyOptions, plan_ewc),
                    description="EWC: strength/2 * sum F (w - w*)^2, Fisher of the previous task (from task 1)")
STRATEGIES.register("l2", Strategy("l2", L2StrategyOptions,
                                   lambda step, options: _regularized(step.default, "l2", options)),
                    description="strength/2 * ||w - w*||^2 towards the weights each task starts from")
STRATEGIES.register("lwf", Strategy("lwf", LwfStrategyOptions,
                                    lambda step, options: _regularized(step.default, "lwf", options)),
                    description="LwF: distil the starting model's answer-token distributions (temperature T)")


# ------------------------------------------------------------------------------------------------ model-tailor


@dataclass
class TailorStrategyOptions:
    """``sparsity``: the fraction of the considered entries grafted from each task's fine-tuning; ``options``: the
    other Model Tailor options (fusion, compensate, ...; `unforget.tailoring.model_tailor`); ``modules``: the
    considered tensors (default: the language model's blocks and the projector)."""

    sparsity: float = 0.1
    calib_samples: int = 32  # training samples of the task (drawn as train.sampling draws train.limit)
    calib_batch_size: int = 8
    modules: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.calib_samples < 1 or self.calib_batch_size < 1:
            raise ConfigError("model-tailor: calib_samples and calib_batch_size must be >= 1")
        TAILORING_METHODS.get("model-tailor").make_config({"sparsity": self.sparsity, **self.options})


def graft_task(step: Step, options: TailorStrategyOptions, lm: LoadedModel,
               before: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Replace the trained model by the running model before the task plus a Model Tailor patch of the task."""
    model = lm.model
    data = replace(step.default.data, datasets=[step.task], limit=options.calib_samples, shuffle=False,
                   mix_strategy="concat", interleave_probs=None, budget=None)
    batches = list(instruction_batches(lm, data, options.calib_batch_size))
    device = next(model.parameters()).device
    result = tailor(
        StateDictCheckpoint(before, source=f"the running model before task {step.index}"),
        StateDictCheckpoint(model.state_dict(), source=f"the model fine-tuned on task {step.index} ({step.task})"),
        batches, "model-tailor", sparsity=options.sparsity, modules=options.modules, device=device,
        model_loader=lambda folder: model, **options.options,
    )
    model.load_state_dict(result.state_dict())
    model.eval()
    summary = result.summary()
    summary.pop("tensors", None)  # per-tensor statistics: too long for the step's record
    return summary


STRATEGIES.register("model-tailor", Strategy("model-tailor", TailorStrategyOptions, lambda step, options: step.default,
                                             graft_task),
                    description="after each task, graft only a sparse Model Tailor patch onto the running model")
