"""`unforget ls [NAME]`: what exists, one table per registry, plus the shipped configs.

:data:`REGISTRIES` is the one table of registries: each ``ls NAME`` choice, the registry behind it and how its rows
read. Help texts elsewhere in the CLI name a registry's members as ``{NAME}`` (``--method {methods}``), filled in
from this table by :class:`NamesHelpFormatter` when help is shown, so no help text lists names by hand.
"""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from rich.markup import escape
from rich.table import Table

from ..config import list_configs
from ..evaluation.judges.base import JUDGES
from ..models.zoo import ZOO
from ..registry import Entry, Registry
from ..studies.base import STUDIES
from .console import console
from .verb import Verb

Listing = tuple[str, list[str], list[list[Any]]]  # title, columns, rows


# The registries that load torch (or numpy and PIL) when imported are imported when listed: start-up time.
def _zoo() -> Registry[Any]:
    return ZOO


def _datasets() -> Registry[Any]:
    from ..data import DATASETS  # start-up time: numpy and PIL, only for the tables that need them

    return DATASETS


def _formats() -> Registry[Any]:
    from ..data import FORMATS  # start-up time, as above

    return FORMATS


def _judges() -> Registry[Any]:
    return JUDGES


def _methods() -> Registry[Any]:
    from ..training.methods.base import METHODS  # start-up time: loads torch, only for this table

    return METHODS


def _tailoring() -> Registry[Any]:
    from ..tailoring.base import TAILORING_METHODS  # start-up time: loads torch, only for this table

    return TAILORING_METHODS


def _regularizers() -> Registry[Any]:
    from ..training.regularizer_registry import REGULARIZERS  # start-up time: loads torch, only for this table

    return REGULARIZERS


def _strategies() -> Registry[Any]:
    from ..studies.continual.strategies import STRATEGIES  # start-up time: loads torch, only for this table

    return STRATEGIES


def _studies() -> Registry[Any]:
    return STUDIES


def _reports() -> Registry[Any]:
    from ..reports.base import REPORTS  # start-up time: matplotlib, only for this table

    return REPORTS


def _model_row(e: Entry[Any]) -> list[Any]:
    try:
        where = str(e.obj.folder())
    except Exception as exc:  # not built yet: say how
        where = str(exc)
    return [e.name, e.description, where]


def _dataset_row(e: Entry[Any]) -> list[Any]:
    return [e.name] + [e.meta.get(k, "") for k in ("task", "classes", "train", "test", "role", "source")]


def _format_row(e: Entry[Any]) -> list[Any]:
    # the loader's keyword options (format:PATH?option=value), read from its signature: never listed by hand
    options = [p for p in inspect.signature(e.obj).parameters if p != "path"]
    return [f"{e.name}:PATH", e.description, e.meta.get("source", ""), ", ".join(options)]


def _name_row(e: Entry[Any]) -> list[Any]:
    return [e.name, e.description]


@dataclass(frozen=True)
class RegistryListing:
    """``unforget ls NAME``: the table of one registry."""

    title: str
    registry: Callable[[], Registry[Any]]
    columns: tuple[str, ...] = ("name", "description")
    row: Callable[[Entry[Any]], list[Any]] = _name_row
    extra_rows: tuple[tuple[str, ...], ...] = ()  # rows that are not entries (any model folder or hub id)
    also: tuple[str, ...] = ()  # other tables shown with this one by `ls NAME`

    def table(self) -> Listing:
        rows = [self.row(e) for e in self.registry().entries()] + [list(r) for r in self.extra_rows]
        return self.title, list(self.columns), rows


ANY_MODEL = ("<folder or hub id>", "any HF LLaVA-family model (llava, llava_next, qwen2_vl, qwen2_5_vl, idefics3, "
             "smolvlm, instructblip)", "--model PATH")

# every registry, in the order `unforget ls` shows them; the keys are the `ls NAME` choices
REGISTRIES: dict[str, RegistryListing] = {
    "models": RegistryListing("models", _zoo, ("name", "description", "where"), _model_row, (ANY_MODEL,)),
    "datasets": RegistryListing("datasets", _datasets, ("name", "task", "classes", "train", "test", "role", "source"),
                                _dataset_row, also=("formats",)),
    "formats": RegistryListing("dataset formats (--datasets FORMAT:PATH)", _formats,
                               ("format", "description", "layout", "options"), _format_row),
    "judges": RegistryListing("judges", _judges),
    "methods": RegistryListing("fine-tuning methods", _methods),
    "tailoring": RegistryListing("tailoring", _tailoring),
    "regularizers": RegistryListing("regularizers", _regularizers),
    "strategies": RegistryListing("continual strategies", _strategies),
    "studies": RegistryListing("studies", _studies),
    "reports": RegistryListing("reports (unforget report --kind NAME)", _reports),
}
CONFIGS = "configs"
WHAT = ["all", *REGISTRIES, CONFIGS]


def registry_names(name: str) -> list[str]:
    """The members of the registry ``ls name`` lists."""
    return REGISTRIES[name].registry().names()


class NamesHelpFormatter(argparse.HelpFormatter):
    """Fills ``{NAME}`` in a help text (NAME a key of :data:`REGISTRIES`) with that registry's members, when help
    is shown: finding them imports the library, which a parse without ``--help`` never does."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if not text:
            return text
        return re.sub(r"\{(\w+)\}", lambda m: (", ".join(registry_names(m[1])) if m[1] in REGISTRIES else m[0]), text)


class NamesParser(argparse.ArgumentParser):
    """The CLI's parser: help texts through :class:`NamesHelpFormatter`; argparse makes each sub-command's parser of
    its parent's class, so every verb's help gets the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", NamesHelpFormatter)
        super().__init__(*args, **kwargs)


def add_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="all", choices=WHAT)


def catalogue(what: str = "all") -> Iterator[Listing]:
    shown_with = REGISTRIES[what].also if what in REGISTRIES else ()
    for name, listing in REGISTRIES.items():
        if what in ("all", name) or name in shown_with:
            yield listing.table()
    if what in ("all", CONFIGS):
        yield "configs (unforget config show NAME)", ["name"], [[c] for c in list_configs()]


def run_ls(args: argparse.Namespace) -> int:
    con = console()
    for title, columns, rows in catalogue(args.what):
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c)
        for row in rows:
            table.add_row(*[escape(str(x)) for x in row])  # a description may hold [brackets]
        if not rows:
            table.add_row(*(["(none yet)"] + [""] * (len(columns) - 1)))
        con.print(table)
    return 0


VERB = Verb("ls", f"list what exists: {', '.join(REGISTRIES)}, {CONFIGS}", add_ls, run_ls)
