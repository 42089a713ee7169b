"""Arguments several verbs share: comma lists, the model flags, ``--overwrite``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..runs import clear_run


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; None for an empty or missing flag."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="zoo name (tiny-llava), HF folder, or hub id")
    p.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--device-map", dest="device_map", help='"auto" spreads a large model over devices')
    p.add_argument("--attn", dest="attn_implementation", help="eager | sdpa | flash_attention_2")
    p.add_argument("--adapter", help="peft adapter folder to apply")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given, as the ``model`` section of a config."""
    keys = ("dtype", "device", "device_map", "attn_implementation", "adapter")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "model", None):
        out["name"] = args.model
    return out


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start again (otherwise a folder holding a different run "
                        "is refused, and one holding this run resumes)")


def overwrite_run(cfg: Any, out: str | Path) -> None:
    """``--overwrite``: every name of ``cfg`` resolved first (a typo deletes nothing), then the old run deleted by the
    main process."""
    # start-up time: both load torch, only once a verb runs
    from ..checks import checked_identity
    from ..scale.sharding import current_shard

    checked_identity(cfg)
    if current_shard().is_main:
        clear_run(out)
