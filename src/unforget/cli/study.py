"""`unforget study NAME --config FILE`: run a whole experiment to its run folder and report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import list_configs, load_config
from ..studies.base import STUDIES
from .arguments import add_overwrite_arg, overwrite_run
from .console import ProgressTracker, console, progress_bar, report_unjudged
from .verb import Verb


def add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="{studies} (`unforget ls studies`)")
    p.add_argument("-c", "--config", help="study YAML (e.g. emt/quickstart; `unforget config list`)")
    p.add_argument("--out", help="run folder (default runs/<study>/<name>); an existing one resumes when it holds "
                                 "the same study (run.json), and is refused otherwise")
    add_overwrite_arg(p)
    p.add_argument("--models", help="survey: comma list of models (zoo names, HF folders, BASE@ADAPTER_DIR)")
    p.add_argument("--datasets", help="survey: comma list of datasets")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2 eval.limit=50")


def run_study(args: argparse.Namespace) -> int:
    study = STUDIES.get(args.name)
    if not args.config and not (getattr(args, "models", None) or getattr(args, "datasets", None)):
        print_study_usage(study.name)  # a whole default study is hours of compute: never started unasked
        return 2
    base: dict = {"out": args.out} if args.out else {}
    for key in ("models", "datasets"):  # list fields of the studies that have them (survey)
        if getattr(args, key, None):
            base[key] = [v.strip() for v in getattr(args, key).split(",") if v.strip()]
    cfg = load_config(study.config_class, args.config, args.overrides, base=base or None)
    if args.overwrite:
        overwrite_run(cfg, cfg.out or Path("runs") / study.name / cfg.name)
    con = console()
    con.print(f"[bold]unforget study {args.name}[/] {args.config or ''}")
    t0 = time.perf_counter()
    with progress_bar() as prog:
        out = study.run(cfg, progress=ProgressTracker(prog))
    con.print(f"study finished in {time.perf_counter() - t0:.0f} s: {out}")
    for name in ("report.html", "report.md"):
        if (out / name).exists():
            con.print(f"  {out / name}")
    return report_unjudged(con, out)  # 3 with the --rejudge command when verdicts are missing


def print_study_usage(name: str) -> None:
    shipped = [c for c in list_configs() if c.startswith(f"{name}/")]
    con = console()
    con.print(f"usage: unforget study {name} -c CONFIG [--out DIR] [KEY=VALUE ...]", markup=False, highlight=False)
    con.print(f"a study runs from a config (nothing was started). Shipped {name} configs:", markup=False,
              highlight=False)
    for config in shipped or ["(none: write a YAML file; see `unforget config list`)"]:
        con.print(f"  {config}", markup=False, highlight=False)
    if shipped:
        con.print(f"e.g. unforget study {name} -c {shipped[0]}   (copy one to edit: unforget config cp {shipped[0]} "
                  "my.yaml)", markup=False, highlight=False)


VERB = Verb("study", "run a whole study (`unforget ls studies`) to a run folder and report",
            add_study, run_study)
