"""`unforget finetune`: fine-tune a model with one method.

``accelerate launch --multi_gpu --num_processes N -m unforget finetune ...`` (GPUs) or
``torchrun --nproc_per_node N -m unforget finetune ... --device cpu`` (CPU, gloo) runs the same command as DDP.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from ..config import load_config, parse_override
from .arguments import add_model_args, add_overwrite_arg, model_overrides, overwrite_run, split_list
from .console import ProgressTracker, console, progress_bar
from .verb import Verb


def add_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config (see `unforget config list`)")
    add_model_args(p)
    p.add_argument("--datasets", "--dataset", dest="datasets",
                   help="comma list: names (digits), format:path (jsonl:/data/vqa.jsonl), or dataset YAML files")
    p.add_argument("--split", help="split to train on (default train)")
    p.add_argument("--limit", type=int,
                   help="N samples per dataset (class-stratified, seeded by data.sampling_seed; `--sampling head` "
                        "for the first N)")
    p.add_argument("--sampling", choices=["stratified", "head"], help="how --limit draws (default stratified)")
    p.add_argument("--classes", help="comma list of class indices to keep (e.g. 0,1,2)")
    p.add_argument("--template", help="prompt template index, or round-robin")
    p.add_argument("--method", help="{methods} (`unforget ls methods`)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the method's)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", dest="max_steps", type=int, help="optimizer steps; overrides --epochs")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="per process")
    p.add_argument("--grad-accum", dest="grad_accum", type=int)
    p.add_argument("--mixed-precision", dest="mixed_precision", choices=["auto", "no", "bf16", "fp16"])
    p.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    p.add_argument("--save-every-steps", dest="save_every_steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/finetune/<model>-<method>-<time>); an existing one resumes "
                                 "when it holds the same run (run.json)")
    add_overwrite_arg(p)
    p.add_argument("overrides", nargs="*",
                   help="dotted overrides, e.g. method_options.r=16 warmup_ratio=0.1 data.shuffle=false")


TRAIN_PREFIX = "train."  # the studies' section holding these settings: `train.epochs=1` means the same here


def split_method_options(overrides: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``method_options.r=16`` overrides as a mapping (method_options is a free-form mapping, checked by the
    method's own options dataclass), and the other overrides. ``train.X=V`` is read as ``X=V``: a study's
    ``train`` section is this verb's whole config, so the same override works for both."""
    rest: list[str] = []
    options: dict[str, Any] = {}
    for text in overrides:
        if text.startswith(TRAIN_PREFIX):
            text = text[len(TRAIN_PREFIX):]
        if text.startswith("method_options."):
            keys, value = parse_override(text)
            node = options
            for key in keys[1:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
        else:
            rest.append(text)
    return rest, options


def finetune_base(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given as flags (they override the YAML; dotted overrides override both)."""
    base: dict[str, Any] = {}
    for key in ("method", "lr", "epochs", "max_steps", "batch_size", "grad_accum", "mixed_precision",
                "gradient_checkpointing", "save_every_steps", "seed", "out"):
        if getattr(args, key, None) is not None:
            base[key] = getattr(args, key)
    data: dict[str, Any] = {}
    for key in ("split", "limit", "sampling", "template"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if args.datasets:
        data["datasets"] = split_list(args.datasets)
    if args.classes:
        data["classes"] = split_list(args.classes)
    if data:
        base["data"] = data
    if model_overrides(args):
        base["model"] = model_overrides(args)
    return base


def run_finetune(args: argparse.Namespace) -> int:
    # start-up time: these load torch, only once the verb runs
    from accelerate import PartialState
    from ..training.config import FinetuneConfig
    from ..training.trainer import finetune

    overrides, method_options = split_method_options(list(args.overrides))
    cfg = load_config(FinetuneConfig, args.config, overrides, base=finetune_base(args))
    cfg.method_options = {**cfg.method_options, **method_options}
    if args.overwrite and cfg.out:
        overwrite_run(cfg, cfg.out)
    con = console()
    con.print(f"[bold]unforget finetune[/] model={cfg.model.name} method={cfg.method} "
              f"datasets={','.join(cfg.data.datasets)} -> {cfg.out or 'runs/finetune/...'}")
    with progress_bar() as prog:
        result = finetune(cfg, progress=ProgressTracker(prog))
    if PartialState().is_main_process:
        table = Table(title=f"fine-tuned with {result.method}", title_justify="left", show_header=False)
        share = 100.0 * result.trainable_parameters / max(result.total_parameters, 1)
        rows = [("run folder", result.out), ("steps", str(result.global_step)), ("epochs", str(result.epochs_done)),
                ("trainable parameters", f"{result.trainable_parameters:,} of {result.total_parameters:,} "
                                         f"({share:.2f}%)"),
                ("first / last loss", f"{result.losses[0]:.4f} / {result.losses[-1]:.4f}" if result.losses else "-"),
                ("last checkpoint", result.final_checkpoint or "-"), ("seconds", f"{result.seconds:.1f}")]
        if result.resumed_from:
            rows.insert(1, ("resumed from", result.resumed_from))
        for key, value in rows:
            table.add_row(key, value)
        con.print(table)
        # start-up time: the study registries load torch (already loaded by now)
        from ..studies.report import write_run_report

        _, files = write_run_report(result.out, "finetune")
        con.print(f"report: {files.html}")
    return 0


VERB = Verb("finetune",
            "fine-tune an MLLM (`unforget ls methods`); resumable; DDP under accelerate launch or torchrun",
            add_finetune, run_finetune)
