"""`unforget tailor`: graft fine-tuned models onto their base (Model Tailor) or merge them; `tailor apply`.

    unforget tailor --base tiny-llava --finetuned runs/finetune/vqa --calib scenes-vqa --sparsity 0.1 \\
        --out runs/tailor/vqa [--format patch] [fusion=0.5 calib.limit=128]
    unforget tailor apply --base tiny-llava --patch runs/tailor/vqa/patch.safetensors --out models/vqa-tailored
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ..config import load_config, parse_override
from ..errors import ConfigError
from .arguments import split_list
from .console import ProgressTracker, console, progress_bar
from .verb import Verb

if TYPE_CHECKING:
    from ..tailoring.run import TailorConfig


def add_tailor(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config (TailorConfig keys)")
    p.add_argument("--base", help="base model: zoo name (tiny-llava) or HF folder; default: the base recorded in "
                                  "the training checkpoints")
    p.add_argument("--finetuned", help="comma list, one per task: HF folder, peft adapter folder, partial "
                                       "safetensors, `unforget finetune` checkpoint or run folder")
    p.add_argument("--calib", help="calibration datasets: one shared or one per fine-tuned model (a+b: both for "
                                   "one model); default: each model's fine-tuning data")
    p.add_argument("--calib-limit", dest="calib_limit", type=int, help="calibration samples per dataset (64)")
    p.add_argument("--calib-batch-size", dest="calib_batch_size", type=int, help="calibration batch size (4)")
    p.add_argument("--method", help="{tailoring} (`unforget ls tailoring`)")
    p.add_argument("--sparsity", type=float, help="fraction of the considered weights taken from the fine-tuned "
                                                  "models (grafting methods; default 0.1)")
    p.add_argument("--modules", help="comma list of tensor-name patterns (default: language-model blocks and "
                                     "projector)")
    p.add_argument("--format", choices=["hf", "patch"], help="hf: a model folder (default); patch: patch.safetensors")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (calibration and compensation)")
    p.add_argument("--dtype", help="calibration dtype: auto | float32 | bfloat16 | float16")
    p.add_argument("--out", help="output folder (default runs/tailor/<base>-<method>-<time>)")
    p.add_argument("--patch", help="apply: the patch.safetensors to apply")
    p.add_argument("--scaling", type=float, help="apply: scale the patch (1 = as made)")
    p.add_argument("--no-check-base", dest="check_base", action="store_false",
                   help="apply: do not refuse a base other than the patch's")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace weights already in --out")
    p.add_argument("--allow-pickle", dest="allow_pickle", action="store_true", default=None,
                   help="read .bin/.pt checkpoints (unpickling runs code: only files you trust)")
    p.add_argument("overrides", nargs="*", metavar="[apply] KEY=VALUE",
                   help="`apply` as the first word applies a patch; KEY=VALUE: config keys (calib.limit=128) or "
                        "method options (fusion=0.5, density=0.3, alpha=0.5, compensate=false)")


def tailor_config(args: argparse.Namespace, overrides: list[str]) -> TailorConfig:
    from ..tailoring.run import TailorConfig  # start-up time: loads torch, only once the verb runs

    base: dict[str, Any] = {}
    for key in ("base", "method", "sparsity", "format", "device", "dtype", "out", "overwrite", "allow_pickle"):
        if getattr(args, key, None) is not None:
            base[key] = getattr(args, key)
    if args.finetuned:
        base["finetuned"] = split_list(args.finetuned)
    if args.modules:
        base["modules"] = split_list(args.modules)
    calib: dict[str, Any] = {}
    if args.calib:
        calib["datasets"] = split_list(args.calib)
    if args.calib_limit is not None:
        calib["limit"] = args.calib_limit
    if args.calib_batch_size is not None:
        calib["batch_size"] = args.calib_batch_size
    if calib:
        base["calib"] = calib
    fields = {f.name for f in dataclasses.fields(TailorConfig)}
    config_overrides, options = [], {}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] in fields:
            config_overrides.append(text)
        else:  # a method option given bare: fusion=0.5
            options[".".join(keys)] = value
    cfg = load_config(TailorConfig, args.config, config_overrides, base=base)
    cfg.options = {**cfg.options, **options}
    return cfg


def run_tailor_verb(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if overrides and overrides[0] == "apply":
        return _apply(args, overrides[1:])
    from ..tailoring.run import run_tailor  # start-up time: loads torch, only once the verb runs

    cfg = tailor_config(args, overrides)
    con = console()
    con.print(f"[bold]unforget tailor[/] method={cfg.method} base={cfg.base or '(from checkpoints)'} "
              f"finetuned={','.join(cfg.finetuned)}")
    with progress_bar() as prog:
        run = run_tailor(cfg, progress=ProgressTracker(prog))
    _print_summary(con, run.summary, run.model)
    return 0


def _apply(args: argparse.Namespace, rest: list[str]) -> int:
    # start-up time: these load torch, only once the verb runs
    from ..models.loading import resolve_model_path
    from ..tailoring.patch import apply_patch

    if rest:
        raise ConfigError(f"tailor apply takes no KEY=VALUE arguments, got {' '.join(rest)}")
    missing = [flag for flag, value in (("--base", args.base), ("--patch", args.patch), ("--out", args.out))
               if not value]
    if missing:
        raise ConfigError(f"tailor apply needs {', '.join(missing)}: unforget tailor apply --base BASE --patch "
                          "PATCH --out DIR")
    con = console()
    out = apply_patch(resolve_model_path(args.base), args.patch, args.out, scaling=args.scaling,
                      check_base=args.check_base, overwrite=bool(args.overwrite))
    con.print(f"applied {args.patch} to {args.base} -> {out}")
    return 0


def _print_summary(con: Console, summary: dict[str, Any], model: Path) -> None:
    table = Table(title=f"tailored with {summary['method']}", title_justify="left", show_header=False)
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items() if v)
    rows = [("base", summary["base"]), ("fine-tuned", ", ".join(summary["finetuned"])),
            ("changed entries", f"{summary['changed']:,} of {summary['considered']:,} "
                                f"({100 * summary['changed_fraction']:.2f}%)"),
            ("tensors patched", str(sum(1 for t in summary["tensors"].values() if t["changed"]))),
            ("seconds", seconds or "-"), ("written", str(model))]
    for key, value in rows:
        table.add_row(key, value)
    con.print(table)


VERB = Verb("tailor", "Model Tailor and weight-merging baselines: graft fine-tuned weights onto the base "
            "(`tailor apply` applies a patch)", add_tailor, run_tailor_verb)
