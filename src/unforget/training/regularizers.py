"""Penalties added to the fine-tuning loss against forgetting: ``l2``, ``ewc``, ``lwf``.

``FinetuneConfig.regularizer`` names one (``{name: ewc, options: {strength: 100, data: [digits]}}``); the trainer
builds it once, from the model as training starts, and adds ``regularizer.penalty(batch, outputs)`` to every
micro-batch's loss weighted by that micro-batch's share of the optimizer step's answer tokens (over accumulation
steps and processes): a penalty of the weights (l2, ewc) counts once per step, a per-token mean (lwf) becomes the
mean over the step's answer tokens, as in one process with one batch (the logged loss includes it). "As training starts" is before a resumed run loads its
checkpoint's weights, so the anchor is the same on every (re)start:

- ``l2``: ``strength/2 * sum (w - w0)^2`` over the trainable parameters, ``w0`` their values at the start;
- ``ewc`` (Kirkpatrick et al. 2017): ``strength/2 * sum F (w - w0)^2``, ``F`` the diagonal empirical Fisher of the
  trainable parameters at ``w0``: per-sample squared gradients of the answer loss on ``data`` (the previous task's
  training set), averaged. ``F`` is computed once and saved as ``<out>/regularizer.safetensors``; a resumed run
  reads it back instead of recomputing it;
- ``lwf`` (Li & Hoiem 2016, Learning without Forgetting): ``strength * T^2 * KL(p_old^T || p_new^T)`` averaged over
  the answer tokens of each training batch, ``p^T`` the softmax of the logits over ``T``, ``p_old`` from a frozen
  copy of the model at the start (one more model in memory).

The penalties act on the parameters that train: with ``lora`` these are the adapters (``w0``: their
initialisation, so ``l2`` pulls the new adapter's update towards zero). A regularizer is one class plus one
``REGULARIZERS.register(RegularizerKind(...))`` call, here in this module (the one module that the registry,
training/regularizer_registry.py, imports for its members); building one never draws from the random generators.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import torch
from safetensors.torch import load_file, save_file

from ..config import to_dict
from ..errors import ConfigError, TrainingError
from ..models.loading import LoadedModel
from ..runs import dumps_strict
from .checkpoints import capture_rng, restore_rng
from .config import RegularizerConfig, TrainDataConfig
from .data import InstructionDataset, processor_only, training_items
from .examples import IGNORE_INDEX, collate_examples
from .regularizer_registry import REGULARIZERS, RegularizerKind

log = logging.getLogger(__name__)

STATE_FILE = "regularizer.safetensors"

Batch = Mapping[str, Any]


class Regularizer(Protocol):
    """What the trainer calls: a scalar added to the loss of one micro-batch."""

    def penalty(self, batch: Batch, outputs: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class BuildContext:
    """What a regularizer may use when it is built: the model about to train (prepared by its method, at its
    starting weights), the data settings of the run, and where its saved state lives."""

    lm: LoadedModel
    data: TrainDataConfig
    state_file: Path
    resuming: bool  # a checkpoint will be loaded after this: read saved state instead of recomputing it
    save: bool  # this process writes the state file (the main one)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _snapshot(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


# ------------------------------------------------------------------------------------------------------- l2


@dataclass
class L2Options:
    strength: float = 1.0  # lambda in strength/2 * ||w - w0||^2

    def validate(self) -> None:
        if not self.strength >= 0:
            raise ConfigError(f"regularizer.options.strength must be >= 0, got {self.strength}")


class WeightPull:
    """``strength/2 * sum_k F_k (w_k - w0_k)^2`` over named parameters (``F = 1`` when no weights are given):
    the ``l2`` penalty, and ``ewc``'s with the Fisher as ``F``. Summed in float32 whatever the parameters' dtype."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], anchors: Mapping[str, torch.Tensor],
                 strength: float, weights: Mapping[str, torch.Tensor] | None = None):
        missing = sorted(set(params) - set(anchors)) or sorted(set(params) - set(weights or params))
        if missing:
            raise TrainingError(f"the regularizer has no anchor or weight for parameter '{missing[0]}'")
        self.params = dict(params)
        self.anchors = dict(anchors)
        self.weights = dict(weights) if weights is not None else None
        self.strength = float(strength)

    def penalty(self, batch: Batch | None = None, outputs: Any = None) -> torch.Tensor:
        total: torch.Tensor | None = None
        for name, p in self.params.items():
            anchor = self.anchors[name]
            if anchor.device != p.device:  # the model moved (accelerate) after the anchor was taken
                anchor = self.anchors[name] = anchor.to(p.device)
            diff = p.float() - anchor.float()
            term = diff.square()
            if self.weights is not None:
                weight = self.weights[name]
                if weight.device != p.device:
                    weight = self.weights[name] = weight.to(p.device)
                term = term * weight
            total = term.sum() if total is None else total + term.sum()
        if total is None:
            raise TrainingError("the regularizer found no trainable parameter to act on")
        return 0.5 * self.strength * total


def build_l2(options: L2Options, ctx: BuildContext) -> WeightPull:
    params = trainable_parameters(ctx.lm.model)
    return WeightPull(params, _snapshot(params), options.strength)


REGULARIZERS.register(RegularizerKind(
    "l2", L2Options, build_l2,
    description="strength/2 * ||w - w0||^2: pull the trainable weights towards where they started"))


# ------------------------------------------------------------------------------------------------------ ewc


@dataclass
class EwcOptions:
    strength: float = 100.0  # lambda in strength/2 * sum F (w - w0)^2
    data: list[str] = field(default_factory=list)  # datasets whose Fisher is taken (the previous task's)
    split: str = "train"
    limit: int | None = 64  # samples per dataset, drawn as the training data's `sampling` draws its limit
    batch_size: int = 1  # 1: the per-sample (empirical) Fisher; larger batches square batch-mean gradients

    def validate(self) -> None:
        if not self.strength >= 0:
            raise ConfigError(f"regularizer.options.strength must be >= 0, got {self.strength}")
        if not self.data:
            raise ConfigError("regularizer ewc needs options.data: the datasets (the previous task's training "
                              "set) on which the Fisher information is measured, e.g. data: [digits]")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"regularizer.options.limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"regularizer.options.batch_size must be >= 1, got {self.batch_size}")


def diagonal_fisher(model: torch.nn.Module, batches: Iterator[Batch] | list[Batch],
                    params: Mapping[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """``mean_b grad_b(loss)^2`` for each of ``params`` (float32, on their device), the model in eval mode."""
    names = list(params)
    tensors = [params[n] for n in names]
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic model
    count = 0
    try:
        for batch in batches:
            loss = model(**batch_to(batch, tensors[0].device, tensors[0].dtype), use_cache=False).loss
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss is {loss.item()} on Fisher batch {count}: the model cannot score "
                                    "this data; check the regularizer's data")
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    fisher[n].add_(g.detach().float().square())
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise TrainingError("the Fisher information needs at least one batch; the regularizer's data is empty")
    return {n: f / count for n, f in fisher.items()}


def build_ewc(options: EwcOptions, ctx: BuildContext) -> WeightPull:
    params = trainable_parameters(ctx.lm.model)
    anchors = _snapshot(params)
    fisher = read_state(ctx.state_file, set(params)) if ctx.resuming and ctx.state_file.is_file() else None
    if fisher is None:
        data = TrainDataConfig(datasets=list(options.data), split=options.split, limit=options.limit,
                               sampling=ctx.data.sampling, sampling_seed=ctx.data.sampling_seed,
                               template=ctx.data.template, shuffle=False)
        fisher = diagonal_fisher(ctx.lm.model, instruction_batches(ctx.lm, data, options.batch_size), params)
        log.info("ewc: Fisher information of %d tensors from %s (mean %.3g)", len(fisher), ", ".join(options.data),
                 float(sum(f.sum() for f in fisher.values()) / max(1, sum(f.numel() for f in fisher.values()))))
        if ctx.save:
            write_state(ctx.state_file, fisher, {"regularizer": "ewc", "options": dumps_strict(to_dict(options))})
    return WeightPull(params, anchors, options.strength, weights=fisher)


REGULARIZERS.register(RegularizerKind(
    "ewc", EwcOptions, build_ewc,
    description="strength/2 * sum F (w - w0)^2 with the diagonal Fisher F of the previous task"))


# ------------------------------------------------------------------------------------------------------ lwf


@dataclass
class LwfOptions:
    strength: float = 1.0
    temperature: float = 2.0

    def validate(self) -> None:
        if not self.strength >= 0:
            raise ConfigError(f"regularizer.options.strength must be >= 0, got {self.strength}")
        if not self.temperature > 0:
            raise ConfigError(f"regularizer.options.temperature must be > 0, got {self.temperature}")


def answer_token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Mean over answer tokens of ``KL(softmax(teacher/T) || softmax(student/T))``.

    The logits at position i predict token i+1, so the positions whose next token is an answer token
    (``labels[:, 1:] != -100``) are compared. 0 when there is no answer token."""
    mask = labels[:, 1:] != IGNORE_INDEX
    if not bool(mask.any()):
        return student_logits.sum() * 0.0
    student = student_logits[:, :-1][mask].float() / temperature
    teacher = teacher_logits[:, :-1][mask].float() / temperature
    log_p_teacher = torch.log_softmax(teacher, dim=-1)
    log_p_student = torch.log_softmax(student, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()


class Distillation:
    """LwF: the answer-token distributions of the model being trained are held close to a frozen copy's."""

    def __init__(self, teacher: torch.nn.Module, strength: float, temperature: float):
        self.teacher = teacher
        self.strength = float(strength)
        self.temperature = float(temperature)

    def penalty(self, batch: Batch, outputs: Any) -> torch.Tensor:
        reference = next(self.teacher.parameters())
        inputs = batch_to({k: v for k, v in batch.items() if k != "labels"}, reference.device, reference.dtype)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs, use_cache=False).logits
        kl = answer_token_kl(outputs.logits, teacher_logits, batch["labels"], self.temperature)
        return self.strength * self.temperature ** 2 * kl


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def build_lwf(options: LwfOptions, ctx: BuildContext) -> Distillation:
    return Distillation(frozen_copy(ctx.lm.model), options.strength, options.temperature)


REGULARIZERS.register(RegularizerKind(
    "lwf", LwfOptions, build_lwf,
    description="LwF: KL between the trained and the starting model's answer-token distributions"))


# ------------------------------------------------------------------------------------------------ building


def build_regularizer(config: RegularizerConfig, lm: LoadedModel, data: TrainDataConfig, out: str | Path, *,
                      resuming: bool, save: bool = True) -> Regularizer | None:
    """The run's regularizer (None when ``config.name`` is None), built from ``lm.model`` as it is now: call it
    after the method prepared the model and before a checkpoint's weights are loaded into it."""
    if not config.name:
        return None
    kind = REGULARIZERS.get(config.name)
    options = kind.parse_options(config.options)
    ctx = BuildContext(lm, data, Path(out) / STATE_FILE, resuming, save)
    tensors, meta = capture_rng()
    try:
        return kind.build(options, ctx)
    finally:
        restore_rng(tensors, meta)


def write_state(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata))
    os.replace(tmp, path)


def read_state(path: Path, names: set[str]) -> dict[str, torch.Tensor]:
    state = load_file(str(path))
    if set(state) != names:
        raise TrainingError(f"{path} holds the regularizer state of other parameters than this run trains; "
                            "delete it (it is recomputed) or resume with the same method options")
    return state


# --------------------------------------------------------------------------------------------------- data


def batch_to(batch: Batch, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Tensors onto ``device``; floating ones (pixel values) in the model's ``dtype``."""
    moved: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        moved[name] = value
    return moved


def instruction_batches(lm: LoadedModel, data: TrainDataConfig, batch_size: int) -> Iterator[dict[str, Any]]:
    """Collated training batches of ``data`` in order (no shuffling), built as the trainer builds them: the Fisher's
    data here, Model Tailor's calibration set in the continual study."""
    items, _ = training_items(data)
    dataset = InstructionDataset(LoadedModel(processor_only(), lm.processor, lm.family, lm.source), items)
    tok = lm.tokenizer
    collate = functools.partial(collate_examples, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
                                else tok.eos_token_id)
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
