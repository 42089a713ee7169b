"""The fine-tuning loop, on accelerate: one process, or DDP under ``accelerate launch`` with no change.

``finetune(cfg)`` loads the model, lets the method choose what trains, builds instruction examples from the
datasets, and runs AdamW with a warmup + cosine (or linear / constant) schedule, gradient accumulation, clipping
and mixed precision. The loss of an optimizer step is its answer tokens' summed cross-entropy over their number,
counted over its accumulation steps and processes (transformers' ``num_items_in_batch``), so DDP, FSDP and gradient
accumulation train and log exactly as one process taking the step's samples in one batch. Every optimizer step is
appended to ``<out>/train_log.jsonl``; a checkpoint is written after
every epoch (and every ``save_every_steps``). Rerunning the same config on the same ``out`` continues from the last
complete checkpoint and ends with the same weights as an uninterrupted run: the epoch order is a function of
(seed, epoch), and the checkpoint restores weights, optimizer, scheduler and every process's RNG state.

A non-finite loss or gradient norm stops the run with :class:`~unforget.errors.TrainingError`; the checkpoints
written before stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from ..identity import open_run
from ..config import dump_yaml, read_yaml, to_dict
from ..errors import ConfigError, TrainingError
from ..models.feature_cache import CACHE_FOLDER, cached_vision_tower, vision_feature_cache
from ..models.loading import LoadedModel, load_model, resolve_device
from ..runs import RunDir, atomic_write_text, dumps_strict, read_jsonl
from ..runs.provenance import run_info
from .checkpoints import (
    Checkpoint,
    TrainerState,
    capture_rng,
    checkpoints_dir,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer,
    load_rng,
    load_scheduler_state,
    mark_epoch_end_done,
    remove_partial_checkpoints,
    restore_rng,
    save_checkpoint,
)
from .config import RESUME_KEYS, FinetuneConfig
from .data import EpochShuffleSampler, InstructionDataset, describe_items, processor_only, training_items
from .examples import collate_examples
from .loss import AnswerLoss, answer_token_count
from .methods.base import METHODS, count_parameters
from .regularizers import build_regularizer
from ..runs.layout import CONFIG, TRAIN_LOG

log = logging.getLogger(__name__)


EpochEndFn = Callable[[int, LoadedModel], None]  # (epoch, 1-based; the model being trained, in eval mode)
ProgressFn = Callable[[str, int, int], None]  # ("train", steps done, total steps)


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced. ``lm.model`` is the trained model (a peft model for lora)."""

    lm: LoadedModel
    out: str
    method: str
    global_step: int
    epochs_done: int
    trainable_parameters: int
    total_parameters: int
    checkpoints: list[str] = field(default_factory=list)
    final_checkpoint: str | None = None
    resumed_from: str | None = None
    losses: list[float] = field(default_factory=list)  # per optimizer step, the whole run (from train_log.jsonl)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every field before dropping one, and an FSDP-sharded model
        # refuses to be copied
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "lm"} | {
            "final_loss": self.final_loss}

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a GPU that has it, else no; bf16/fp16 where the device cannot -> ConfigError."""
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16" if bf16_ok else "no"
    if requested == "fp16" and not cuda:
        raise ConfigError(f"mixed_precision fp16 needs a CUDA GPU; this run is on {device}. Use bf16 or no")
    if requested == "bf16" and cuda and not bf16_ok:
        raise ConfigError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use fp16 or no")
    return requested


def make_accelerator(cfg: FinetuneConfig, find_unused_parameters: bool) -> Any:
    # accelerate runs several CPU processes as DDP (gloo) only when told cpu=True
    cpu = cfg.model.device == "cpu" or (cfg.model.device in (None, "auto") and not torch.cuda.is_available())
    if not cpu:
        resolve_device(cfg.model.device)  # a clear error when CUDA was asked for and is missing
        if cfg.model.device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
            torch.cuda.set_device(int(cfg.model.device.split(":", 1)[1]))  # accelerate uses the current device
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        # accelerate keeps one state per process; a second finetune() in the same process may ask for another
        # device or precision (a launched DDP process keeps its state: it holds the process group)
        AcceleratorState._reset_state(reset_partial_state=True)
    device = PartialState(cpu=cpu).device
    mixed = resolve_mixed_precision(cfg.mixed_precision, device)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
    return Accelerator(cpu=cpu, mixed_precision=mixed, kwargs_handlers=handlers)


def default_out(cfg: FinetuneConfig) -> str:
    return str(Path("runs") / "finetune" / f"{Path(cfg.model.name).name}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}")


def _pick(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


# Per-process settings: a run resumes on another number of processes when the global batch they make is the same.
PER_PROCESS_KEYS = ("batch_size", "grad_accum")


def check_same_run(run: RunDir, cfg: FinetuneConfig, num_processes: int = 1) -> None:
    """An out folder with checkpoints resumes only the run that wrote them. The number of processes may change
    (8 GPUs -> 4) when batch_size x grad_accum x processes, the samples of one optimizer step, stays the same:
    then every step sees the same samples in the same order."""
    saved_path = run.file(CONFIG)
    checkpoints = list_checkpoints(run.path)
    if not saved_path.is_file() or not checkpoints:
        return
    saved = read_yaml(saved_path)
    now = yaml.safe_load(dump_yaml(cfg))
    before = checkpoints[-1].state.num_processes
    global_before = int(_pick(saved, "batch_size")) * int(_pick(saved, "grad_accum") or 1) * before
    global_now = cfg.batch_size * cfg.grad_accum * num_processes
    if global_before != global_now:
        raise ConfigError(
            f"{run.path} was trained with {global_before} samples per optimizer step (batch_size "
            f"{_pick(saved, 'batch_size')} x grad_accum {_pick(saved, 'grad_accum')} x {before} processes); this run "
            f"makes {global_now} (batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x {num_processes}). "
            f"Choose batch_size and grad_accum so that their product times the processes is {global_before}"
        )
    changed = [k for k in RESUME_KEYS if k not in PER_PROCESS_KEYS and _pick(saved, k) != _pick(now, k)]
    if changed:
        detail = "; ".join(f"{k}: {_pick(saved, k)!r} -> {_pick(now, k)!r}" for k in changed)
        raise ConfigError(
            f"{run.path} holds checkpoints of a run with another config ({detail}). Rerun with the same settings "
            "to resume it, or choose another --out"
        )


def load_for_training(cfg: FinetuneConfig, device: torch.device) -> LoadedModel:
    m = cfg.model
    lm = load_model(m.name, dtype=m.dtype, device=None if m.device_map else str(device), device_map=m.device_map,
                    attn_implementation=m.attn_implementation, trust_remote_code=m.trust_remote_code, adapter=m.adapter)
    if m.adapter:
        # training starts from base + adapter: fold it in so that the method sees one ordinary model
        lm.model = lm.model.merge_and_unload()
    return lm


FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def build_optimizer(model: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights (1-d parameters) get no weight decay, as in transformers' Trainer. The fused
    kernel where every parameter allows it (Trainer's default too): one kernel for all tensors instead of a dozen
    small ones per tensor, which is most of the optimizer's time for LoRA's many small adapters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in decay + no_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log records after the checkpoint a run resumes from (they will be written again)."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    atomic_write_text(path, "".join(dumps_strict(r) + "\n" for r in kept))


def finetune(
    cfg: FinetuneConfig,
    *,
    lm: LoadedModel | None = None,
    on_epoch_end: EpochEndFn | None = None,
    progress: ProgressFn | None = None,
    epoch_end_on_every_process: bool = False,
) -> FinetuneResult:
    """Fine-tune ``cfg.model`` (or ``lm``, trained in place) on ``cfg.data`` with ``cfg.method``.

    ``on_epoch_end(epoch, lm)`` runs on the main process after each epoch's checkpoint, with the model in eval
    mode and the RNG state put back afterwards, so evaluating there does not change training; if the run is
    interrupted before it returns, a rerun calls it again for that epoch before training on. With ``max_steps``
    ending inside an epoch, that last partial epoch gets a step checkpoint and no ``on_epoch_end`` call.
    ``epoch_end_on_every_process``: call it on every process instead (a sharded evaluation there: each process
    evaluates its share of the samples; the callback writes its files from the main process only)."""
    t_start = time.perf_counter()
    method = METHODS.get(cfg.method)
    options = method.parse_options(cfg.method_options)
    cfg = dataclasses.replace(cfg, lr=cfg.lr if cfg.lr is not None else method.default_lr,
                              out=cfg.out or default_out(cfg))
    items, _ = training_items(cfg.data)
    text_only = items[0].sample.image is None
    accelerator = make_accelerator(cfg, find_unused_parameters=text_only)
    if cfg.model.device_map and accelerator.num_processes > 1:
        raise ConfigError("model.device_map spreads one model over devices and cannot be combined with "
                          "several processes (accelerate launch); use one or the other")
    # names resolved and the folder checked before the model loads: resuming needs the same identity (the samples
    # of one optimizer step may be split differently over processes: check_same_run below)
    run = open_run(cfg.out, "finetune", cfg, main=accelerator.is_main_process, drop=PER_PROCESS_KEYS)
    check_same_run(run, cfg, accelerator.num_processes)
    if accelerator.is_main_process:
        run.write_config(cfg)
        remove_partial_checkpoints(run.path)
    accelerator.wait_for_everyone()

    set_seed(cfg.seed)
    lm = lm or load_for_training(cfg, accelerator.device)
    model = lm.model
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = method.prepare(model, options)
    lm.model = model
    trainable, total = count_parameters(model)
    if accelerator.mixed_precision == "fp16" and any(p.requires_grad and p.dtype == torch.float16
                                                     for p in model.parameters()):
        raise ConfigError("mixed_precision fp16 needs float32 trainable weights (its gradient scaler cannot "
                          "unscale fp16 gradients): load the model with model.dtype=float32, or use bf16")
    log.info("method %s: %d of %d parameters train (%.2f%%); %d examples %s", cfg.method, trainable, total,
             100.0 * trainable / max(total, 1), len(items), describe_items(items))

    resume = latest_checkpoint(run.path)
    # built from the starting weights, before a resume loads the checkpoint's: the same anchor on every (re)start
    regularizer = build_regularizer(cfg.regularizer, lm, cfg.data, run.path, resuming=resume is not None,
                                    save=accelerator.is_main_process)
    if resume is not None:
        if resume.state.method != cfg.method:
            raise ConfigError(f"{resume.path} was written by method '{resume.state.method}', not '{cfg.method}'")
        if resume.state.num_processes != accelerator.num_processes:
            log.info("%s was written by %d processes, this run has %d (the same samples per optimizer step); random "
                     "draws (dropout) after the resume differ from an uninterrupted run", resume.path,
                     resume.state.num_processes, accelerator.num_processes)
        method.load(model, resume.path)
        log.info("resuming from %s (step %d)", resume.path, resume.state.global_step)

    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    dataset = InstructionDataset(LoadedModel(processor_only(), lm.processor, lm.family, lm.source), items)
    sampler = EpochShuffleSampler.for_items(items, cfg.data, cfg.seed, cfg.batch_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        collate_fn=functools.partial(collate_examples, pad_token_id=pad_id),
        generator=torch.Generator().manual_seed(cfg.seed),  # not the global one, which dropout draws from
    )
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    model, opt, loader = accelerator.prepare(model, optimizer, loader)

    micro_per_epoch = len(loader)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    # start-up time: transformers' optimization module (about 3 s over this package) loads only when training
    # starts; `unforget plan` and the tailoring calibration import this package without training
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.lr_scheduler if cfg.lr_scheduler != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)

    unwrapped = accelerator.unwrap_model(model)
    base_model = lm.source
    # the LwF regularizer reads every position's logits; otherwise only the answer positions' are computed
    answer_loss = AnswerLoss(unwrapped, answer_logits_only=regularizer is None)

    def state_now(kind: Any, global_step: int, epochs_done: int, step_in_epoch: int,
                  loss: float | None) -> TrainerState:
        return TrainerState(method=cfg.method, kind=kind, global_step=global_step, epochs_done=epochs_done,
                            step_in_epoch=step_in_epoch, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                            num_processes=accelerator.num_processes, base_model=base_model, loss=loss,
                            epoch_end_done=on_epoch_end is None)

    def call_epoch_end(epoch: int, checkpoint: Checkpoint | None) -> None:
        if on_epoch_end is not None and (accelerator.is_main_process or epoch_end_on_every_process):
            tensors, meta = capture_rng()
            unwrapped.eval()
            try:
                on_epoch_end(epoch, LoadedModel(unwrapped, lm.processor, lm.family, lm.source))
            finally:
                unwrapped.train()
                restore_rng(tensors, meta)
            if checkpoint is not None and accelerator.is_main_process:
                mark_epoch_end_done(checkpoint)
        accelerator.wait_for_everyone()

    global_step = epochs_done = step_in_epoch = 0
    saved: list[str] = [str(c.path) for c in list_checkpoints(run.path)]
    last_checkpoint: Checkpoint | None = resume
    log_path = run.file(TRAIN_LOG)
    if resume is not None:
        s = resume.state
        global_step, epochs_done, step_in_epoch = s.global_step, s.epochs_done, s.step_in_epoch
        load_optimizer(model, opt, resume.path)
        scheduler.load_state_dict(load_scheduler_state(resume.path))
        if accelerator.is_main_process:
            _truncate_log(log_path, global_step)
        if s.kind == "epoch" and not s.epoch_end_done:
            call_epoch_end(s.epochs_done, resume)
        if accelerator.process_index < resume.state.num_processes:
            load_rng(resume.path, accelerator.process_index)
        else:  # a process the checkpointed run did not have: a seed of its own, from (seed, step, rank)
            set_seed(cfg.seed + 1_000_003 * s.global_step + accelerator.process_index)
    elif accelerator.is_main_process and log_path.exists():
        log_path.unlink()  # a run that died before its first checkpoint starts over
    accelerator.wait_for_everyone()

    appender = run.appender(TRAIN_LOG) if accelerator.is_main_process else None
    # a frozen vision tower runs once per image for every epoch and epoch-end evaluation (a study's cache if open)
    features = contextlib.ExitStack()
    features.enter_context(vision_feature_cache(cfg.cache_vision_features, run.path / CACHE_FOLDER))
    features.enter_context(cached_vision_tower(unwrapped))
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    check_grad_norm = accelerator.mixed_precision != "fp16"  # fp16's scaler skips steps with inf gradients itself
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
    model.train()
    if progress is not None and accelerator.is_main_process:
        progress("train", global_step, total_steps)
    t_last = time.perf_counter()
    step_loss = resume.state.loss if resume is not None else None
    try:
        for epoch in range(epochs_done, n_epochs):
            if global_step >= total_steps:
                break
            loader.set_epoch(epoch)
            skip = step_in_epoch * cfg.grad_accum
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for group in accumulation_groups(batches, skip, cfg.grad_accum, micro_per_epoch):
                # the answer tokens of the whole optimizer step, on every process: each micro-batch's summed loss
                # is divided by it (transformers' num_items_in_batch), so a token weighs the same in any split
                local_tokens = sum(answer_token_count(b["labels"]) for b in group)
                step_tokens = accelerator.reduce(torch.as_tensor(local_tokens, device=accelerator.device).float(),
                                                 reduction="sum").clamp(min=1.0)
                step_loss_sum = torch.zeros((), device=accelerator.device)
                for j, batch in enumerate(group):
                    sync = contextlib.nullcontext() if j == len(group) - 1 else accelerator.no_sync(model)
                    with sync:
                        loss_sum, outputs = answer_loss.summed(model, batch)
                        loss = loss_sum / step_tokens
                        if regularizer is not None:
                            # weighted by the micro-batch's share of the step's answer tokens: a penalty of the
                            # weights alone (l2, ewc) adds up to itself once per step, a per-token one (lwf) to
                            # its mean over the step's answer tokens
                            share = answer_token_count(batch["labels"]).float() / step_tokens
                            loss = loss + regularizer.penalty(batch, outputs) * share
                        contribution = accelerator.reduce(loss.detach().float(), reduction="sum")
                        if not torch.isfinite(contribution):
                            raise TrainingError(
                                f"the loss is {contribution.item()} at step {global_step + 1} (epoch {epoch + 1}); "
                                f"training stopped. {_keeps(last_checkpoint)} Lower the learning rate "
                                f"(lr={cfg.lr:g}), set max_grad_norm, or use bf16 instead of fp16"
                            )
                        # DDP and FSDP average the gradients over the processes; this loss is already a share of
                        # the whole step's, so their sum is wanted
                        accelerator.backward(loss * accelerator.num_processes)
                    step_loss_sum += contribution
                lr_now = scheduler.get_last_lr()[0]
                grad_norm = accelerator.clip_grad_norm_(trainable_params, max_norm)
                grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
                if check_grad_norm and not math.isfinite(grad_norm):
                    raise TrainingError(
                        f"the gradient norm is {grad_norm} at step {global_step + 1} (epoch {epoch + 1}); training "
                        f"stopped before the update. {_keeps(last_checkpoint)} Lower the learning rate "
                        f"(lr={cfg.lr:g}) or set max_grad_norm"
                    )
                opt.step()
                if not opt.step_was_skipped:
                    scheduler.step()
                opt.zero_grad(set_to_none=True)
                global_step += 1
                step_in_epoch += 1
                step_loss = float(step_loss_sum)
                now = time.perf_counter()
                if appender is not None:
                    appender.write({"step": global_step, "epoch": round(epoch + step_in_epoch / steps_per_epoch, 4),
                                    "loss": step_loss, "lr": lr_now, "grad_norm": grad_norm,
                                    "seconds": round(now - t_last, 4)})
                t_last = now
                if global_step % cfg.log_every_steps == 0 or global_step == total_steps:
                    log.info("step %d/%d epoch %d loss %.4f lr %.3g grad_norm %.3g", global_step, total_steps,
                             epoch + 1, step_loss, lr_now, grad_norm)
                if progress is not None and accelerator.is_main_process:
                    progress("train", global_step, total_steps)
                epoch_done = step_in_epoch == steps_per_epoch
                finished = global_step >= total_steps
                if (cfg.save_every_steps and global_step % cfg.save_every_steps == 0 or finished) and not epoch_done:
                    state = state_now("step", global_step, epochs_done, step_in_epoch, step_loss)
                    path = save_checkpoint(accelerator, checkpoints_dir(run.path), state, method=method,
                                           model=unwrapped, wrapped=model, processor=lm.processor, optimizer=opt,
                                           scheduler=scheduler)
                    last_checkpoint = Checkpoint(path, state)
                    saved.append(str(path))
                if finished and not epoch_done:
                    break
            else:
                epochs_done = epoch + 1
                step_in_epoch = 0
                state = state_now("epoch", global_step, epochs_done, 0, step_loss)
                path = save_checkpoint(accelerator, checkpoints_dir(run.path), state, method=method,
                                       model=unwrapped, wrapped=model, processor=lm.processor, optimizer=opt,
                                       scheduler=scheduler)
                last_checkpoint = Checkpoint(path, state)
                saved.append(str(path))
                call_epoch_end(epochs_done, last_checkpoint)
    finally:
        features.close()
        if appender is not None:
            appender.close()

    unwrapped.eval()
    losses = [r["loss"] for r in read_jsonl(log_path)] if log_path.exists() else []
    result = FinetuneResult(
        lm=LoadedModel(unwrapped, lm.processor, lm.family, lm.source), out=str(run.path), method=cfg.method,
        global_step=global_step, epochs_done=epochs_done, trainable_parameters=trainable, total_parameters=total,
        checkpoints=list(dict.fromkeys(saved)), final_checkpoint=str(last_checkpoint.path) if last_checkpoint else None,
        resumed_from=str(resume.path) if resume else None, losses=losses, seconds=time.perf_counter() - t_start,
    )
    if accelerator.is_main_process:
        run.write_metrics({"run_info": run_info(), "config": to_dict(cfg), **result.to_dict(),
                           "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision})
        run.mark_done()
    accelerator.wait_for_everyone()
    return result


def accumulation_groups(batches: Iterable[Any], start: int, grad_accum: int,
                        micro_per_epoch: int) -> Iterator[list[Any]]:
    """The micro-batches of ``batches`` (numbered from ``start``, a multiple of ``grad_accum``) grouped by optimizer
    step: ``grad_accum`` each, the last group of the epoch what is left. A group is read whole before its first
    backward, as its token count divides every micro-batch's loss (transformers' Trainer reads them so too)."""
    group: list[Any] = []
    for i, batch in enumerate(batches, start=start):
        group.append(batch)
        group_start = i - i % grad_accum
        if i == group_start + min(grad_accum, micro_per_epoch - group_start) - 1:
            yield group
            group = []
    if group:
        yield group


def _keeps(checkpoint: Checkpoint | None) -> str:
    if checkpoint is None:
        return "No checkpoint was written yet."
    return f"The last good checkpoint is {checkpoint.path} (step {checkpoint.state.global_step})."
