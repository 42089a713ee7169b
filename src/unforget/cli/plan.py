"""``unforget plan``: memory, batch size, FLOPs and GPU-hours of a study before any GPU is spent on it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from ..config import apply_overrides, find_config, read_yaml
from ..runs import atomic_write_json
from .console import console
from .verb import Verb

# dense bf16 tensor-core peak of one H100 SXM (989.4 TFLOP/s); utilisation a tuned LLaVA fine-tune reaches
DEFAULT_PEAK_TFLOPS = 989.0
DEFAULT_MFU = 0.35


def add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, help="study config: shipped name (emt/llava15-7b) or YAML file")
    p.add_argument("-n", "--processes", type=int, default=1, help="GPUs the study runs on (all nodes together)")
    p.add_argument("--gpu-memory", dest="gpu_memory", type=float, default=80.0, help="GiB per GPU (default 80)")
    p.add_argument("--text-tokens", dest="text_tokens", type=int, default=None,
                   help="text tokens per sample besides the image tokens (default 64)")
    p.add_argument("--peak-tflops", dest="peak_tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                   help="bf16 peak per GPU, for the time estimate (default: H100 SXM, 989)")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="model FLOP utilisation assumed (default 0.35)")
    p.add_argument("--json", help="also write the plan as JSON to this file")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the study config, as `unforget study` takes them "
                                                "(train.batch_size=8 model.dtype=float16)")


def with_overrides(path: Path, study: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The study config with dotted overrides set (``train.epochs=2``), each key checked against the config class
    of the study the file belongs to (configs/<study>/...), as `unforget study` checks them."""
    if not overrides:
        return study
    from ..studies.base import STUDIES  # start-up time: the study registry loads torch, only with overrides

    kind = path.parent.name if path.parent.name in STUDIES.names() else None
    return apply_overrides(study, overrides, STUDIES.get(kind).config_class if kind else None)


def _gib(n: int | float) -> str:
    return f"{n / 1024**3:.2f}"


def _tflop(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e12:.2f}"


def run_plan(args: argparse.Namespace) -> int:
    from ..planning.study_plan import DEFAULT_TEXT_TOKENS, GIB, plan_study, study_hours  # start-up time: loads torch

    path = find_config(args.config)
    study = with_overrides(path, read_yaml(path), args.overrides or [])
    plan = plan_study(study, processes=args.processes, device_memory=int(args.gpu_memory * GIB),
                      text_tokens=args.text_tokens or DEFAULT_TEXT_TOKENS)
    con = console()  # piped: wide enough for the table (console.PIPED_WIDTH), not rich's 80 columns
    p = plan.parameters
    con.print(f"[bold]{path}[/]: {plan.model} in {plan.dtype} on {plan.processes} x {args.gpu_memory:g} GiB")
    con.print(f"parameters {p.total:,} = vision {p.vision:,} + projector {p.projector:,} + language {p.language:,}"
              + (f" + other {p.other:,}" if p.other else "") + f"; weights {_gib(plan.weight_bytes)} GiB")
    con.print(f"sample: {plan.image_tokens} image + {plan.sequence_tokens - plan.image_tokens} text tokens; "
              f"FSDP wraps {', '.join(plan.fsdp_wrap)}")
    table = Table(title="training, GiB per GPU (batch per process "
                        f"{plan.assumptions['train_batch_per_process']}, gradient checkpointing "
                        f"{'on' if plan.assumptions['gradient_checkpointing'] else 'off'})", title_justify="left")
    for col in ("arm", "trainable", "LoRA layers", "strategy", "weights", "grads", "optim", "buffers",
                "act/sample", "total", "auto batch", "TFLOP/sample"):
        table.add_column(col, justify="left" if col in ("arm", "strategy") else "right")
    for m in plan.methods:
        for strategy, mem, auto in (("ddp", m.ddp, m.auto_batch_ddp), ("fsdp", m.fsdp, m.auto_batch_fsdp)):
            table.add_row(m.name if strategy == "ddp" else "", f"{m.trainable:,}" if strategy == "ddp" else "",
                          str(m.lora_modules) if strategy == "ddp" else "", strategy, _gib(mem.weights),
                          _gib(mem.gradients), _gib(mem.optimizer), _gib(mem.comm_buffers),
                          _gib(mem.activations_per_sample), _gib(mem.total), str(auto) if auto else "does not fit",
                          _tflop(m.train_step_flops) if strategy == "ddp" else "")
    con.print(table)
    g = plan.generate
    if g is not None:
        con.print(f"evaluation (generate, batch {g.batch_size}): weights {_gib(g.weights)} + KV cache "
                  f"{_gib(g.kv_cache_per_sample)} + prefill {_gib(g.prefill_per_sample)} GiB per sample = "
                  f"{_gib(g.total)} GiB; auto batch {plan.auto_batch_generate}; "
                  f"{_tflop(plan.generate_flops_per_sample)} TFLOP per sample; "
                  f"{plan.eval_samples_per_pass:,} samples per evaluation pass")
    hours = study_hours(plan, args.peak_tflops * 1e12, args.mfu)
    for line in hours.lines():
        con.print(line)
    if args.json:
        atomic_write_json(args.json, {"config": str(path), **plan.to_dict(), "time": hours.to_dict()})
    return 0


VERB = Verb("plan", "memory, batch size, FLOPs and GPU-hours of a study config, before running it", add_plan, run_plan)
