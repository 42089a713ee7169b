"""Calibration statistics at the fine-tuned weights: diagonal Fisher and layer-input Hessians.

Passes over the task's calibration batches (``model(**batch).loss``, HF style) give:
- the diagonal Fisher ``F = mean_b g_b**2`` (and the mean gradient for the optional first-order term),
  accumulated by post-accumulate-grad hooks so that full gradients never pile up;
- ``H = 2 X X^T / n`` for every considered ``nn.Linear``, from forward hooks on its inputs (all tokens),
  in a second, forward-only pass.
Statistics are keyed by the base checkpoint's tensor names and handed back on CPU.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..errors import DataError, ModelLoadError, TrainingError
from .checkpoints import Checkpoint
from .keys import match_keys

log = logging.getLogger(__name__)

Batch = Mapping[str, Any]
# base model folder (None for in-memory weights) -> a model whose outputs have .loss
ModelLoader = Callable[[Path | None], nn.Module]


@dataclass
class CalibrationStats:
    """Per considered tensor (base names): Fisher diagonal, mean gradient, and input Hessian of its layer."""

    fisher: dict[str, torch.Tensor] = field(default_factory=dict)
    gradient: dict[str, torch.Tensor] = field(default_factory=dict)
    hessians: dict[str, torch.Tensor] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0


def load_model_for_calibration(folder: Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """The base model from its HF folder (AutoModelForImageTextToText, else AutoModelForCausalLM)."""
    # start-up time: every import of unforget.tailoring imports this module; transformers' model classes (about
    # 1 s over torch) load only when a model is loaded for calibration
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"dtype": dtype if dtype is not None else "auto"}
    errors = []
    for auto_class in (AutoModelForImageTextToText, AutoModelForCausalLM):
        try:
            return auto_class.from_pretrained(str(folder), **kwargs)
        except (ValueError, KeyError) as exc:  # this Auto class does not know the config type
            errors.append(f"{auto_class.__name__}: {exc}")
        except OSError as exc:
            raise ModelLoadError(f"{folder}: cannot load the base model for calibration: {exc}") from exc
    raise ModelLoadError(f"{folder}: no transformers class loads this model ({'; '.join(errors)})")


def load_weights_into(model: nn.Module, checkpoint: Checkpoint, keys: Iterable[str]) -> None:
    """Copy ``keys`` of ``checkpoint`` (base names) into the model's matching tensors."""
    state = model.state_dict()
    keys = list(keys)
    names = match_keys(keys, state.keys(), what="tensor", strict=False)
    missing = [k for k in keys if k not in names]
    if missing:
        log.warning("%d tensors of %s have no counterpart in the loaded model (e.g. %s); they are not used for "
                    "calibration", len(missing), checkpoint.source, missing[0])
    with torch.no_grad():
        for key, name in names.items():
            target = state[name]
            value = checkpoint.get(key)
            if tuple(value.shape) != tuple(target.shape):
                raise ModelLoadError(
                    f"{checkpoint.source}: tensor '{key}' has shape {list(value.shape)} but the loaded model's "
                    f"'{name}' has {list(target.shape)}"
                )
            target.copy_(value)


def _to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)  # pixel_values follow the model's dtype
        moved[name] = value
    return moved


def collect_statistics(
    model: nn.Module,
    batches: Iterable[Batch],
    parameter_names: Mapping[str, str],
    *,
    fisher: bool = True,
    first_order: bool = False,
    hessians: bool = True,
) -> CalibrationStats:
    """Run ``batches`` through ``model`` once. ``parameter_names`` maps base keys to parameter names."""
    start = time.perf_counter()
    params = dict(model.named_parameters())
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    by_param = {parameter_names[key]: key for key in parameter_names}
    stats = CalibrationStats()
    handles: list[Any] = []
    token_counts: dict[str, int] = {}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if fisher or first_order:
        for name, key in by_param.items():
            param = params[name]
            param.requires_grad_(True)
            stats.fisher[key] = torch.zeros(param.shape, dtype=torch.float32, device=device)
            if first_order:
                stats.gradient[key] = torch.zeros(param.shape, dtype=torch.float32, device=device)
            handles.append(param.register_post_accumulate_grad_hook(_fisher_hook(stats, key, first_order)))
    if hessians:
        for name, key in by_param.items():
            module_name, _, leaf = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            if leaf == "weight" and isinstance(module, nn.Linear):
                stats.hessians[key] = torch.zeros(
                    module.in_features, module.in_features, dtype=torch.float32, device=device
                )
                token_counts[key] = 0
                handles.append(module.register_forward_hook(_hessian_hook(stats.hessians, token_counts, key)))
    was_training = model.training
    model.eval()  # dropout off: the statistics of the deterministic fine-tuned model
    grad_mode = torch.enable_grad() if (fisher or first_order) else torch.no_grad()
    try:
        with grad_mode:
            _run_batches(model, batches, stats, device, dtype, backward=fisher or first_order)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if stats.batches == 0:
        raise DataError("the calibration set is empty: pass at least one batch")
    for key in list(stats.fisher):
        stats.fisher[key] = (stats.fisher[key] / stats.batches).cpu()
    for key in list(stats.gradient):
        stats.gradient[key] = (stats.gradient[key] / stats.batches).cpu()
    for key in list(stats.hessians):
        stats.hessians[key] = (stats.hessians[key] * (2.0 / max(token_counts[key], 1))).cpu()
    stats.seconds = time.perf_counter() - start
    return stats


def _run_batches(
    model: nn.Module, batches: Iterable[Batch], stats: CalibrationStats, device: torch.device,
    dtype: torch.dtype, *, backward: bool,
) -> None:
    for index, batch in enumerate(batches):
        output = model(**_to_device(batch, device, dtype))
        loss = getattr(output, "loss", None)
        if loss is None:
            raise DataError(
                f"calibration batch {index} gave no loss: batches need 'labels' (HF style: "
                "input_ids, attention_mask, pixel_values, labels)"
            )
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"calibration batch {index} gave a non-finite loss ({value})")
        if backward:
            loss.backward()
        stats.batches += 1


def _fisher_hook(stats: CalibrationStats, key: str, first_order: bool) -> Callable[[torch.Tensor], None]:
    def accumulate(param: torch.Tensor) -> None:
        grad = param.grad.detach().float()
        stats.fisher[key].add_(grad.square())
        if first_order:
            stats.gradient[key].add_(grad)
        param.grad = None  # keep one gradient alive at a time

    return accumulate


def _hessian_hook(hessians: dict[str, torch.Tensor], counts: dict[str, int], key: str) -> Callable[..., None]:
    def accumulate(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0].detach()
        x = x.reshape(-1, x.shape[-1]).float()
        hessians[key].addmm_(x.T, x)
        counts[key] += x.shape[0]

    return accumulate


def calibrate(
    base: Checkpoint,
    finetuned: list[Checkpoint],
    batches_per_task: list[Iterable[Batch]],
    keys: list[str],
    *,
    fisher: bool,
    hessians: bool,
    first_order: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    model_loader: ModelLoader | None = None,
) -> list[CalibrationStats]:
    """Statistics for each fine-tuned model on its own calibration batches (one model in memory)."""
    if base.folder is None and model_loader is None:
        raise ModelLoadError(
            f"{base.source}: calibration needs a model to run; pass the base as a Hugging Face folder or give "
            "model_loader"
        )
    if model_loader is not None:
        model = model_loader(base.folder)
    else:
        model = load_model_for_calibration(base.folder, dtype=dtype)
    model.to(device)
    parameter_names = match_keys(keys, [n for n, _ in model.named_parameters()], what="considered tensor")
    results = []
    previous: set[str] = set()
    try:
        for task, (checkpoint, batches) in enumerate(zip(finetuned, batches_per_task)):
            changed = set(checkpoint.changed_keys())
            load_weights_into(model, base, sorted(previous - changed))  # undo the previous task's weights
            load_weights_into(model, checkpoint, sorted(changed))
            previous = changed
            log.info("calibrating task %d (%s)", task, checkpoint.source)
            batches = list(batches)
            # Fisher (with backward) and Hessians (forward only) in separate passes: their memory peaks
            # (a float32 copy of the considered weights vs in_features^2 per layer) then never add up.
            stats = collect_statistics(model, batches, parameter_names, fisher=fisher, first_order=first_order,
                                       hessians=False) if (fisher or first_order) else CalibrationStats()
            if hessians:
                layer_inputs = collect_statistics(model, batches, parameter_names, fisher=False, hessians=True)
                stats.hessians = layer_inputs.hessians
                stats.batches = layer_inputs.batches
                stats.seconds += layer_inputs.seconds
            results.append(stats)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results
