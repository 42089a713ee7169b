"""`unforget <verb>`: thin - parses arguments, calls the library, shows progress and tables.

One file per verb, each with its ``VERB``; :data:`VERBS` lists them (a new verb: a new file and one entry there).
The library never imports this package. The verbs import the heavy parts of the library (torch and what loads it)
inside the function that runs them, so that ``unforget --help`` and a typo answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Sequence

from rich.logging import RichHandler

from .. import __version__
from ..errors import UnforgetError
from . import compare_logs, config, eval, finetune, judge, ls, plan, report, study, tailor, zoo
from .console import console
from .verb import Verb

# in the order `unforget --help` lists them
VERBS: dict[str, Verb] = {verb.name: verb for verb in (
    ls.VERB, config.VERB, eval.VERB, zoo.VERB, finetune.VERB, tailor.VERB, study.VERB, report.VERB, judge.VERB,
    plan.VERB, compare_logs.VERB,
)}


def build_parser() -> argparse.ArgumentParser:
    parser = ls.NamesParser(
        prog="unforget",
        description="Measure and mitigate catastrophic forgetting in multimodal LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"unforget {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--width", type=int, help="console width in columns (default: the terminal's; piped: 200)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS.values():
        verb.add_arguments(sub.add_parser(verb.name, help=verb.help, description=verb.help))
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that dotted overrides may come anywhere (``-c X train.lr=1e-4 --out Y
    train.epochs=2``): argparse fills a ``nargs="*"`` positional once, so overrides after an option would be
    refused as unrecognised. Anything else unrecognised is still an error."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    if args.width:
        os.environ["UNFORGET_WIDTH"] = str(args.width)  # read by console.console(), which every verb calls
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False, markup=False)])
    for noisy in ("transformers", "httpx", "urllib3", "datasets", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_transformers()
    try:
        return VERBS[args.verb].run(args)
    except UnforgetError as exc:
        console().print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console().print("[yellow]interrupted: rerun the same command to resume[/]")
        return 130
    except OSError as exc:  # disk full, permissions, a vanished mount: what was written stays intact
        if args.verbose:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        console().print(f"[bold red]error:[/] {exc.strerror or exc}{where}; the results written so far are "
                        "intact: free space or fix the path, then rerun the same command to resume "
                        "(--verbose shows the traceback)")
        return 1


def _quiet_transformers() -> None:
    try:
        # start-up time: transformers loads only once a command line parsed, not for --help or a typo
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
