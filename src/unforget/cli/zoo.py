"""`unforget zoo list | build NAME`: the models unforget ships recipes for."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..models.zoo import ZOO, cache_dir
from .console import console
from .verb import Verb


def add_zoo(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build a zoo model from its recipe")
    b.add_argument("name", help="{models}")
    b.add_argument("--out", help="folder to write (default: the unforget cache)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--retrain", action="store_true",
                   help="smol-llava: rerun its training recipe instead of using the committed trained weights")
    sub.add_parser("list", help="list zoo models")


def run_zoo(args: argparse.Namespace) -> int:
    if args.action == "list":
        for e in ZOO.entries():
            print(f"{e.name}\t{e.description}")
        return 0
    ZOO.get(args.name)  # an unknown name is refused with a did-you-mean
    from ..zoo import recipe_for  # start-up time: the recipes load torch, transformers and peft

    build = recipe_for(args.name)
    out = Path(args.out) if args.out else cache_dir() / "models" / args.name
    t0 = time.perf_counter()
    path = build(out, seed=args.seed, **({"retrain": True} if args.retrain else {}))
    console().print(f"built {args.name} in {time.perf_counter() - t0:.0f} s -> {path}")
    return 0


VERB = Verb("zoo", "build the models unforget ships recipes for (`unforget zoo list`)", add_zoo, run_zoo)
