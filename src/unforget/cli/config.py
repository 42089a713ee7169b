"""`unforget config list | show NAME | cp NAME FILE`: the shipped configs, torchtune-style."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..config import find_config, list_configs
from ..errors import UnforgetError
from .verb import Verb


def add_config(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print a shipped config (e.g. emt/quickstart)")
    show.add_argument("name")
    cp = sub.add_parser("cp", help="copy a shipped config to FILE for editing")
    cp.add_argument("name")
    cp.add_argument("file")
    sub.add_parser("list", help="list shipped configs")


def run_config(args: argparse.Namespace) -> int:
    if args.action == "list":
        for name in list_configs():
            print(name)
        return 0
    path = find_config(args.name)
    if args.action == "show":
        sys.stdout.write(path.read_text())
        return 0
    dest = Path(args.file)
    if dest.exists():
        raise UnforgetError(f"{dest} exists; choose another file name or delete it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    print(f"copied {path} -> {dest}")
    return 0


VERB = Verb("config", "show or copy shipped configs (torchtune-style `config cp`)", add_config, run_config)
