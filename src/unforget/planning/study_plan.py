"""What a study costs before it runs: parameters, memory per device, FLOPs and batch size, from the real config.

The model is built on the meta device (:mod:`unforget.planning.meta`) and the fine-tuning method's own ``prepare`` is
applied to it, so the trainable set (which modules LoRA targets, what ``full`` unfreezes) and the dtypes (peft
keeps LoRA adapters in float32 over a bfloat16 base) are the ones a real run gets. Memory per process, in bytes:

* weights: every parameter at its dtype; FSDP full-shard holds 1/N of them (the block it gathers for the layer
  being computed, 0.38 GiB for a Llama-7B layer in bf16, is left out).
* gradients: the trainable parameters at their dtype; 1/N under FSDP. DDP keeps a second copy in its
  communication buckets.
* optimizer: AdamW's two moments per trainable parameter at its dtype (torch keeps them in the parameter's dtype);
  1/N under FSDP.
* activations (training, per sample): the tensors a Llama-style layer keeps for backward, per token:
  ``6 h + 2 kv + 4 i`` elements (norm inputs and outputs, q/k/v, attention output, gate/up/activation/product of
  the MLP; SDPA/flash attention keep no s x s matrix), at the compute dtype, over every language-model layer.
  With gradient checkpointing only each layer's input (``h`` per token) is kept, plus one layer recomputed in full.
  The vision tower keeps activations only when it trains. Answer logits: ``answer_tokens x vocab`` in float32,
  twice (logits and their gradient).
* KV cache (generation, per sample): ``2 x layers x kv_heads x head_dim x (prompt + new tokens)`` at the dtype,
  plus the prefill's largest transient, one layer's MLP on the prompt (``prompt x (h + 2 i)``).

The automatic batch size is the largest that fits ``device_memory x (1 - headroom)`` after the fixed part; the
headroom covers the CUDA context, the allocator's fragmentation and kernels' workspaces. At run time the evaluator
still backs off on out-of-memory (:func:`unforget.scale.batching.with_oom_backoff`), so a plan that is slightly
optimistic costs a retry, not a crash.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..flops import generate_flops, image_tokens, train_step_flops
from ..models.loading import resolve_dtype
from ..training.methods.base import METHODS, VISION_MODULES, count_parameters, part_of
from .meta import load_model_config, meta_model, repeated_block_classes

GIB = 1024**3
DEFAULT_TEXT_TOKENS = 64  # question + chat template + answer of an EMT / VQA prompt, without the image tokens
DEFAULT_ANSWER_TOKENS = 8
DEFAULT_HEADROOM = 0.10


@dataclass
class PartCounts:
    """Parameter counts by part of the model (tied weights once)."""

    vision: int = 0
    projector: int = 0
    language: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.language + self.other


@dataclass
class TextShape:
    """The language model's dimensions that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> "TextShape":
        text = getattr(config, "text_config", None) or config
        heads = text.num_attention_heads
        return cls(hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                   heads=heads, kv_heads=getattr(text, "num_key_value_heads", None) or heads,
                   head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads, vocab=text.vocab_size)

    def stored_per_token_per_layer(self) -> int:
        """Elements a layer keeps for backward per token (see the module docstring)."""
        return 6 * self.hidden + 2 * self.kv_heads * self.head_dim + 4 * self.intermediate

    def kv_per_token(self) -> int:
        """KV-cache elements per token, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim


@dataclass
class TrainMemory:
    """Bytes per process for one training configuration; ``activations_per_sample`` scales with the batch."""

    weights: int
    gradients: int
    optimizer: int
    comm_buffers: int
    activations_per_sample: int
    batch_size: int

    @property
    def fixed(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.comm_buffers

    @property
    def total(self) -> int:
        return self.fixed + self.batch_size * self.activations_per_sample

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "fixed": self.fixed, "total": self.total}


@dataclass
class GenerateMemory:
    """Bytes per process for batched generation; ``per_sample`` is the KV cache plus the prefill transient."""

    weights: int
    kv_cache_per_sample: int
    prefill_per_sample: int
    batch_size: int

    @property
    def per_sample(self) -> int:
        return self.kv_cache_per_sample + self.prefill_per_sample

    @property
    def total(self) -> int:
        return self.weights + self.batch_size * self.per_sample

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "per_sample": self.per_sample, "total": self.total}


@dataclass
class MethodPlan:
    """One fine-tuning arm: what trains, and what a step costs."""

    name: str
    method: str
    trainable: int
    trainable_bytes: int
    lora_modules: int  # linear layers that received a LoRA adapter (0 for other methods)
    ddp: TrainMemory
    fsdp: TrainMemory
    train_step_flops: int | None  # one sequence, forward + backward (None: the FLOP counter lacks this family)
    auto_batch_ddp: int
    auto_batch_fsdp: int


@dataclass
class StudyPlan:
    """The figures ``unforget plan`` prints and writes as JSON."""

    model: str
    dtype: str
    parameters: PartCounts
    weight_bytes: int
    fsdp_wrap: list[str]
    processes: int
    device_memory: int
    sequence_tokens: int  # image tokens + text tokens of one training / evaluation sample
    image_tokens: int
    methods: list[MethodPlan] = field(default_factory=list)
    generate: GenerateMemory | None = None
    auto_batch_generate: int = 0
    generate_flops_per_sample: int | None = None
    eval_samples_per_pass: int = 0
    train_samples_per_epoch: int | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["parameters"]["total"] = self.parameters.total
        for m, mp in zip(out["methods"], self.methods):
            m["ddp"], m["fsdp"] = mp.ddp.to_dict(), mp.fsdp.to_dict()
        if self.generate is not None:
            out["generate"] = self.generate.to_dict()
        return out


def count_parts(model: Any) -> PartCounts:
    counts = PartCounts()
    for name, p in model.named_parameters():
        part = part_of(name)
        setattr(counts, part, getattr(counts, part) + p.numel())
    return counts


def parameter_bytes(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not trainable_only)


def lora_module_names(model: Any) -> list[str]:
    """Names of the linear layers a peft model put LoRA adapters on."""
    return sorted(name for name, module in model.named_modules()
                  if hasattr(module, "lora_A") and hasattr(module, "base_layer"))


def activation_bytes_per_sample(shape: TextShape, tokens: int, answer_tokens: int, *, dtype_bytes: int,
                                checkpointing: bool, vision: Any = None) -> int:
    """Training activations of one sample (see the module docstring); ``vision``: (layers, hidden, intermediate,
    seq) of a vision tower that trains, else None."""
    if checkpointing:
        text = shape.layers * shape.hidden * tokens + shape.stored_per_token_per_layer() * tokens
    else:
        text = shape.layers * shape.stored_per_token_per_layer() * tokens
    total = text * dtype_bytes + 2 * answer_tokens * shape.vocab * 4
    if vision is not None:
        layers, hidden, intermediate, seq = vision
        per_token_layer = 8 * hidden + 2 * intermediate  # LN in/out twice, q k v, attention out, fc1, activation
        stored = (layers * hidden + per_token_layer) if checkpointing else layers * per_token_layer
        total += stored * seq * dtype_bytes
    return total


def train_memory(trainable_bytes: int, weight_bytes: int, per_sample: int, batch_size: int, processes: int,
                 strategy: str) -> TrainMemory:
    """Bytes per process under ``ddp`` (replicated) or ``fsdp`` (full shard over ``processes``)."""
    if strategy == "fsdp":
        shard = max(processes, 1)
        return TrainMemory(weights=math.ceil(weight_bytes / shard), gradients=math.ceil(trainable_bytes / shard),
                           optimizer=math.ceil(2 * trainable_bytes / shard), comm_buffers=0,
                           activations_per_sample=per_sample, batch_size=batch_size)
    if strategy != "ddp":
        raise ConfigError(f"unknown strategy '{strategy}'; use ddp or fsdp")
    return TrainMemory(weights=weight_bytes, gradients=trainable_bytes, optimizer=2 * trainable_bytes,
                       comm_buffers=trainable_bytes if processes > 1 else 0,
                       activations_per_sample=per_sample, batch_size=batch_size)


def largest_batch(fixed: int, per_sample: int, device_memory: int, headroom: float = DEFAULT_HEADROOM,
                  cap: int = 1024) -> int:
    """The largest batch with ``fixed + b x per_sample <= device_memory x (1 - headroom)``; 0 when even the fixed
    part does not fit (shard the model, or spread it with device_map=auto)."""
    budget = int(device_memory * (1.0 - headroom)) - fixed
    if budget < per_sample or per_sample <= 0:
        return 0 if budget < per_sample else cap
    return min(cap, budget // per_sample)


def generate_memory(shape: TextShape, weight_bytes: int, prompt_tokens: int, new_tokens: int, dtype_bytes: int,
                    batch_size: int) -> GenerateMemory:
    return GenerateMemory(
        weights=weight_bytes,
        kv_cache_per_sample=shape.kv_per_token() * (prompt_tokens + new_tokens) * dtype_bytes,
        prefill_per_sample=prompt_tokens * (shape.hidden + 2 * shape.intermediate) * dtype_bytes,
        batch_size=batch_size,
    )


def _image_tokens(config: Any) -> int:
    try:
        return image_tokens(config)
    except ConfigError:
        # dynamic-resolution towers (Qwen2-VL): a 448 x 448 image -> (448/14)^2 patches merged 2 x 2
        vision = config.vision_config
        merge = getattr(vision, "spatial_merge_size", 1)
        return (448 // vision.patch_size) ** 2 // (merge * merge)


def plan_method(config: Any, name: str, method: str, options: dict[str, Any], *, dtype: torch.dtype,
                tokens: int, answer_tokens: int, batch_size: int, processes: int, device_memory: int,
                checkpointing: bool, headroom: float = DEFAULT_HEADROOM) -> MethodPlan:
    """Prepare ``method`` on a meta model of ``config`` and count what it trains and costs; the FLOPs of a step
    count what the method says it trains (:meth:`~unforget.training.methods.base.FinetuneMethod.trained_parts`)."""
    m = METHODS.get(method)
    opts = m.parse_options(options)
    model = m.prepare(meta_model(config, dtype), opts)
    trainable, _ = count_parameters(model)
    t_bytes = parameter_bytes(model, trainable_only=True)
    w_bytes = parameter_bytes(model)
    shape = TextShape.from_config(config)
    vision_trains = any(p.requires_grad and any(v in n.split(".") for v in VISION_MODULES)
                        and "merger" not in n for n, p in model.named_parameters())
    vision = None
    if vision_trains and hasattr(config.vision_config, "num_hidden_layers"):
        v = config.vision_config
        vision = (v.num_hidden_layers, v.hidden_size, v.intermediate_size, _image_tokens(config) + 1)
    per_sample = activation_bytes_per_sample(shape, tokens, answer_tokens, dtype_bytes=dtype.itemsize,
                                             checkpointing=checkpointing, vision=vision)
    ddp = train_memory(t_bytes, w_bytes, per_sample, batch_size, processes, "ddp")
    fsdp = train_memory(t_bytes, w_bytes, per_sample, batch_size, processes, "fsdp")
    try:
        step = train_step_flops(config, tokens, 1, logits_tokens=answer_tokens,
                                **m.trained_parts(opts).flops_arguments())
        step_flops: int | None = step.total
    except ConfigError:
        step_flops = None
    return MethodPlan(name=name, method=method, trainable=trainable, trainable_bytes=t_bytes,
                      lora_modules=len(lora_module_names(model)), ddp=ddp, fsdp=fsdp, train_step_flops=step_flops,
                      auto_batch_ddp=largest_batch(ddp.fixed, per_sample, device_memory, headroom),
                      auto_batch_fsdp=largest_batch(fsdp.fixed, per_sample, device_memory, headroom))


@dataclass
class ArmSpec:
    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


def study_arms(study: dict[str, Any]) -> list[ArmSpec]:
    """The fine-tuning arms of a study config of any kind (emt ``methods``, 2x2 ``sweep.methods`` and ``hybrid``,
    continual / tailor ``train.method``); tailoring methods are not fine-tuning and are left out."""
    known = set(METHODS.names())
    arms: list[ArmSpec] = []
    candidates = list(study.get("methods") or []) + list((study.get("sweep") or {}).get("methods") or [])
    hybrid = (study.get("hybrid") or {}).get("method")
    if isinstance(hybrid, dict):
        candidates.append(hybrid)
    train = study.get("train") or {}
    if train.get("method"):
        candidates.append({"name": train["method"], "method": train["method"],
                           "options": train.get("method_options") or {}})
    for c in candidates:
        if isinstance(c, dict) and c.get("method") in known:
            arm = ArmSpec(c.get("name") or c["method"], c["method"], dict(c.get("options") or {}))
            if all(a.name != arm.name for a in arms):
                arms.append(arm)
    return arms


def eval_datasets(study: dict[str, Any]) -> list[str]:
    ev = study.get("eval") or {}
    names = list(ev.get("datasets") or [])
    names += list((study.get("cells") or {}).values()) + list(study.get("tasks") or [])
    names += list(study.get("original") or []) + [t["dataset"] for t in study.get("targets") or []
                                                  if isinstance(t, dict) and "dataset" in t]
    return list(dict.fromkeys(names))


def plan_study(study: dict[str, Any], *, processes: int = 1, device_memory: int = 80 * GIB,
               text_tokens: int = DEFAULT_TEXT_TOKENS, answer_tokens: int = DEFAULT_ANSWER_TOKENS,
               headroom: float = DEFAULT_HEADROOM) -> StudyPlan:
    """The plan of a study config (the YAML as a mapping) on ``processes`` devices of ``device_memory`` bytes."""
    model_cfg = study.get("model") or {}
    name = model_cfg.get("name", "tiny-llava")
    dtype_name = model_cfg.get("dtype", "auto")
    dtype = resolve_dtype("bfloat16" if dtype_name == "auto" else dtype_name, "cuda")
    config = load_model_config(name)
    base = meta_model(config, dtype)
    img = _image_tokens(config)
    tokens = img + text_tokens
    shape = TextShape.from_config(config)
    weight_bytes = parameter_bytes(base)
    train = study.get("train") or {}
    ev = study.get("eval") or {}
    batch = int(train.get("batch_size", 8))
    checkpointing = bool(train.get("gradient_checkpointing", False))
    methods = [plan_method(config, a.name, a.method, a.options, dtype=dtype, tokens=tokens,
                           answer_tokens=answer_tokens, batch_size=batch, processes=processes,
                           device_memory=device_memory, checkpointing=checkpointing, headroom=headroom)
               for a in study_arms(study)]
    new_tokens = int(ev.get("max_new_tokens", 16))
    gen = generate_memory(shape, weight_bytes, tokens - answer_tokens, new_tokens, dtype.itemsize,
                          int(ev.get("batch_size", 16)))
    try:
        gen_flops: int | None = generate_flops(config, tokens - answer_tokens, new_tokens, 1).total
    except ConfigError:
        gen_flops = None
    limit = ev.get("limit")
    n_sets = len(eval_datasets(study))
    return StudyPlan(
        model=name, dtype=str(dtype).replace("torch.", ""), parameters=count_parts(base), weight_bytes=weight_bytes,
        fsdp_wrap=repeated_block_classes(base), processes=processes, device_memory=device_memory,
        sequence_tokens=tokens, image_tokens=img, methods=methods, generate=gen,
        auto_batch_generate=largest_batch(gen.weights, gen.per_sample, device_memory, headroom),
        generate_flops_per_sample=gen_flops, eval_samples_per_pass=int(limit) * n_sets if limit else 0,
        train_samples_per_epoch=train.get("limit") or train.get("budget"),
        assumptions={"text_tokens": text_tokens, "answer_tokens": answer_tokens, "headroom": headroom,
                     "gradient_checkpointing": checkpointing, "train_batch_per_process": batch,
                     "eval_batch_per_process": int(ev.get("batch_size", 16)), "max_new_tokens": new_tokens,
                     "eval_datasets": n_sets, "epochs": int(train.get("epochs", 1)),
                     # fine-tune every arm, evaluate after every epoch: the study total is known (EMT); sweeps,
                     # task sequences and tailoring multiply the per-epoch and per-pass figures their own way
                     "per_epoch_study": bool(study.get("methods")) and not study.get("sweep")
                     and not train.get("method")},
    )


@dataclass
class StudyHours:
    """GPU-hours from model FLOPs at an assumed utilisation: ``flops / (peak x mfu) / 3600``. Wall-clock is the
    GPU-hours over the processes (data parallelism adds no FLOPs; communication is left out)."""

    peak_flops: float
    mfu: float
    processes: int
    train_epoch_hours: dict[str, float | None]  # per arm, one epoch over train_samples_per_epoch
    eval_pass_hours: float | None  # one evaluation of every dataset at eval.limit
    epochs: int
    passes: int  # evaluation passes of an EMT-style study: the base model + every arm after every epoch
    total_hours: float | None

    def lines(self) -> list[str]:
        def h(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        out = [f"time at {self.mfu:.0%} of {self.peak_flops / 1e12:.0f} TFLOP/s per GPU (model FLOPs):"]
        for arm, hours in self.train_epoch_hours.items():
            out.append(f"  train {arm}: {h(hours)} GPU-h per epoch")
        out.append(f"  one evaluation pass: {h(self.eval_pass_hours)} GPU-h")
        if self.total_hours is None:
            out.append("  study total: the per-epoch and per-pass figures times the study's runs (docs/scaling.md)")
        else:
            out.append(f"  study ({self.epochs} epochs x {len(self.train_epoch_hours)} arms, {self.passes} evaluation "
                       f"passes): {self.total_hours:.1f} GPU-h, {self.total_hours / self.processes:.1f} h wall-clock "
                       f"on {self.processes} GPU(s)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_hours(plan: StudyPlan, peak_flops: float, mfu: float, epochs: int | None = None) -> StudyHours:
    rate = peak_flops * mfu * 3600.0
    n_train = plan.train_samples_per_epoch
    epochs = epochs or int(plan.assumptions.get("epochs", 1))
    train = {m.name: (m.train_step_flops * n_train / rate if m.train_step_flops is not None and n_train else None)
             for m in plan.methods}
    eval_pass = (plan.generate_flops_per_sample * plan.eval_samples_per_pass / rate
                 if plan.generate_flops_per_sample is not None and plan.eval_samples_per_pass else None)
    passes = 1 + len(plan.methods) * epochs
    parts = list(train.values()) + [eval_pass]
    total = (sum(v * epochs for v in train.values()) + eval_pass * passes  # type: ignore[operator]
             if all(v is not None for v in parts) and plan.assumptions.get("per_epoch_study") else None)
    return StudyHours(peak_flops, mfu, plan.processes, train, eval_pass, epochs, passes, total)
