"""`unforget ls`: what exists - models, datasets, formats, judges, fine-tuning and tailoring methods, studies,
configs - as tables."""

from __future__ import annotations

import argparse
from typing import Any, Iterator

from rich.table import Table

from ..config import list_configs
from ..evaluation.judges.base import JUDGES
from ..models.zoo import ZOO
from ..registry import Registry
from ..studies.base import STUDIES
from .console import console
from .verb import Verb

Listing = tuple[str, list[str], list[list[Any]]]  # title, columns, rows

WHAT = ["all", "models", "datasets", "formats", "judges", "methods", "tailoring", "studies", "configs"]


def add_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="all", choices=WHAT)


def catalogue(what: str = "all") -> Iterator[Listing]:
    if what in ("all", "models"):
        rows = []
        for e in ZOO.entries():
            try:
                where = str(e.obj.folder())
            except Exception as exc:  # not built yet: say how
                where = str(exc)
            rows.append([e.name, e.description, where])
        rows.append(["<folder or hub id>", "any HF LLaVA-family model (llava, llava_next, qwen2_vl, qwen2_5_vl, "
                     "idefics3, smolvlm, instructblip)", "--model PATH"])
        yield "models", ["name", "description", "where"], rows
    if what in ("all", "datasets"):
        from ..data import DATASETS  # start-up time: numpy and PIL, only for the tables that need them

        rows = [[e.name, e.meta.get("task", ""), e.meta.get("classes", ""), e.meta.get("train", ""),
                 e.meta.get("test", ""), e.meta.get("role", ""), e.meta.get("source", "")] for e in DATASETS.entries()]
        yield "datasets", ["name", "task", "classes", "train", "test", "role", "source"], rows
    if what in ("all", "formats", "datasets"):
        from ..data import FORMATS  # start-up time, as above

        rows = [[f"{e.name}:PATH", e.description, e.meta.get("source", "")] for e in FORMATS.entries()]
        yield "dataset formats (--datasets FORMAT:PATH)", ["format", "description", "layout"], rows
    if what in ("all", "judges"):
        yield _names("judges", JUDGES)
    if what in ("all", "methods"):
        from ..training.methods.base import METHODS  # start-up time: loads torch, only for this table

        yield _names("fine-tuning methods", METHODS)
    if what in ("all", "tailoring"):
        from ..tailoring.base import TAILORING_METHODS  # start-up time: loads torch, only for this table

        yield _names("tailoring", TAILORING_METHODS)
    if what in ("all", "studies"):
        yield _names("studies", STUDIES)
    if what in ("all", "configs"):
        yield "configs (unforget config show NAME)", ["name"], [[c] for c in list_configs()]


def _names(title: str, registry: Registry) -> Listing:
    return title, ["name", "description"], [[e.name, e.description] for e in registry.entries()]


def run_ls(args: argparse.Namespace) -> int:
    con = console()
    for title, columns, rows in catalogue(args.what):
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c)
        for row in rows:
            table.add_row(*[str(x) for x in row])
        if not rows:
            table.add_row(*(["(none yet)"] + [""] * (len(columns) - 1)))
        con.print(table)
    return 0


VERB = Verb("ls", "list models, datasets, formats, judges, fine-tuning and tailoring methods, studies, configs",
            add_ls, run_ls)
