"""`unforget judge validate`: each judge's agreement with hand-labelled verdicts (thin; the work is in
:mod:`unforget.evaluation.judges.validate`)."""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..evaluation.judges.base import JUDGES
from ..runs import atomic_write_text, check_resumable, dumps_strict, prepare_run
from ..runs.provenance import run_info
from .arguments import split_list
from .console import EXIT_UNJUDGED, console
from .verb import Verb

if TYPE_CHECKING:
    from ..evaluation.judges.validate import GoldValidation
    from ..stats import Estimate

DEFAULT_JUDGES = "exact,embedding"


def add_judge(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="agreement of judges with human verdicts in a gold JSONL file",
                       description="Run judges on hand-labelled answers and report each judge's accuracy (Wilson "
                                   "interval) and Cohen's kappa against the human verdicts. Gold format: one JSON "
                                   "object a line with answer, correct (the human verdict), reference or label, "
                                   "dataset; optional question, id, note.")
    v.add_argument("--gold", required=True,
                   help="gold JSONL file, or a shipped one by name (digits = configs/judges/gold-digits.jsonl)")
    v.add_argument("--judges", "--judge", dest="judges", default=DEFAULT_JUDGES,
                   help=f"comma list of judges: {{judges}} (default {DEFAULT_JUDGES})")
    v.add_argument("--dataset", help="dataset of lines that name none; lines of other datasets are left out")
    v.add_argument("--judge-option", dest="judge_options", action="append", default=[], metavar="JUDGE.KEY=VALUE",
                   help="a judge constructor option, e.g. embedding.threshold=0.6 or cascade.stages=[exact,embedding]"
                        " (repeatable; values are YAML)")
    v.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    v.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for kappa's interval")
    v.add_argument("--out", help="run folder (default runs/judges/<gold>-<time>): metrics.json, samples.jsonl")


def parse_judge_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``["embedding.threshold=0.6"]`` -> ``{"embedding": {"threshold": 0.6}}`` (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        judge, dot, option = key.partition(".")
        if not sep or not dot or not judge or not option:
            raise ConfigError(f"--judge-option {pair!r}: write JUDGE.KEY=VALUE, e.g. embedding.threshold=0.6")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.setdefault(judge, {})[option] = value
    return out


def validate_identity(gold: Path, names: list[str], options: dict[str, dict[str, Any]],
                      args: argparse.Namespace) -> dict[str, Any]:
    """What decides a validation's figures: the gold file's content, each judge's identity, the dataset filter and
    the interval settings (never a key)."""
    from ..checks import judge_identity  # start-up time: loads torch, only once the verb runs

    for name in names:
        JUDGES.get(name)
    return {"gold": {"path": str(gold.resolve()), "sha256": hashlib.sha256(gold.read_bytes()).hexdigest()},
            "judges": {n: judge_identity(n, options.get(n, {})) for n in names}, "dataset": args.dataset,
            "confidence": args.confidence, "resamples": args.resamples}


def run_judge(args: argparse.Namespace) -> int:
    # start-up time: these load scipy and torch, only once the verb runs
    from ..evaluation.judges.validate import (build_available_judges, find_gold_file, gold_records, read_gold,
                                              validate_judges)

    names = split_list(args.judges) or []
    if not names:
        raise ConfigError(f"--judges is empty: name at least one judge ({', '.join(JUDGES.names())})")
    options = parse_judge_options(args.judge_options)
    path = find_gold_file(args.gold)
    gold = read_gold(path, dataset=args.dataset)
    out = Path(args.out or Path("runs") / "judges" / f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    identity = validate_identity(path, names, options, args)
    check_resumable(out, "judge-validate", identity)  # before any judge is built or called
    judges, unavailable = build_available_judges(names, options)
    if not judges:
        raise ConfigError("no judge could be built here: " + "; ".join(f"{n}: {why}" for n, why in unavailable.items()))
    con = console()
    con.print(f"[bold]unforget judge validate[/] {path}: {len(gold)} answers, judges {', '.join(names)}")
    try:
        validation, verdicts = validate_judges(gold, judges, gold_name=str(path), unavailable=unavailable,
                                               confidence=args.confidence, n_resamples=args.resamples)
    finally:
        for j in judges:
            j.close()
    run = prepare_run(out, "judge-validate", identity)
    atomic_write_text(run.samples_path, "".join(dumps_strict(r, ensure_ascii=False) + "\n"
                                                for r in gold_records(gold, verdicts)))
    run.write_metrics({"run_info": run_info(),
                       "config": {"gold": str(path), "gold_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                  "judges": names, "judge_options": options, "dataset": args.dataset,
                                  "confidence": args.confidence, "resamples": args.resamples},
                       **validation.to_dict()})
    print_validation_table(con, validation)
    con.print(f"-> {run.metrics_path}")
    unjudged = sum(j.unjudged for j in validation.judges)
    if unjudged:
        con.print(f"[bold yellow]{unjudged} verdicts unjudged[/] (a judge could not answer: see the log above and "
                  f"{run.samples_path.name}); rerun the same `unforget judge validate` command when the judge is "
                  "back: the answers judged already come from the judge cache.", soft_wrap=True)
        return EXIT_UNJUDGED
    return 0


def print_validation_table(con: Console, validation: GoldValidation) -> None:
    level = round(validation.confidence * 100)
    table = Table(title=f"judges vs human verdicts ({validation.n} answers, {validation.human_correct} correct; "
                        f"{level}% intervals)", title_justify="left")
    for col in ("judge", "judged", "accuracy", "interval", "kappa", "interval", "false accepts", "false rejects",
                "unjudged"):
        table.add_column(col)
    for j in validation.judges:
        acc = _estimate_cells(j.accuracy)
        kap = _estimate_cells(j.kappa)
        table.add_row(j.judge, str(j.judged), *acc, *kap, str(j.false_accepts), str(j.false_rejects), str(j.unjudged))
    con.print(table)
    for name, why in validation.unavailable.items():
        con.print(f"[yellow]{name}: unavailable here[/] ({why})")


def _estimate_cells(e: Estimate | None) -> tuple[str, str]:
    return (f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]") if e is not None else ("-", "-")


VERB = Verb("judge", "validate judges against hand-labelled verdicts (`judge validate --gold FILE`)",
            add_judge, run_judge)
