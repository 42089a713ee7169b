"""`unforget judge validate`: each judge's agreement with hand-labelled verdicts (thin; the work is in
:mod:`unforget.evaluation.judges.validate`)."""

from __future__ import annotations

import argparse
import hashlib
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from ..cli import _split, console, register_verb
from ..errors import ConfigError

DEFAULT_JUDGES = "exact,embedding"
EXIT_UNJUDGED = 3  # the command finished, but some verdicts are missing (a judge endpoint down): rejudge later


def rejudge_command(folder: str | Path) -> str:
    return f"unforget eval --rejudge --out {shlex.quote(str(folder))}"


def report_unjudged(con: Any, folder: str | Path, unjudged: int | None = None) -> int:
    """The exit code of a command that wrote answers to ``folder``: 0, or :data:`EXIT_UNJUDGED` with the count of
    missing verdicts (counted under ``folder`` when not given) and the command that fills them in."""
    from .rejudge import count_unjudged

    if unjudged is None:
        unjudged = count_unjudged(folder)
    if not unjudged:
        return 0
    con.print(f"[bold yellow]{unjudged} verdicts unjudged[/] (a judge could not answer: see the log above and each "
              "record's judgements.<judge>.error). They are not counted as wrong; judge them when the judge is "
              "back, without generating again:", soft_wrap=True)
    con.print(f"  {rejudge_command(folder)}", soft_wrap=True, markup=False, highlight=False)
    return EXIT_UNJUDGED


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
                   help=f"comma list of judges (default {DEFAULT_JUDGES}; also llm, cascade)")
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
    from ..checks import judge_identity
    from .judges.base import JUDGES

    for name in names:
        JUDGES.get(name)
    return {"gold": {"path": str(gold.resolve()), "sha256": hashlib.sha256(gold.read_bytes()).hexdigest()},
            "judges": {n: judge_identity(n, options.get(n, {})) for n in names}, "dataset": args.dataset,
            "confidence": args.confidence, "resamples": args.resamples}


def run_judge(args: argparse.Namespace) -> int:
    from ..runs import atomic_write_text, check_resumable, dumps_strict, prepare_run
    from .judges.validate import build_judges, find_gold_file, gold_records, read_gold, validate_judges
    from .report import run_info

    names = _split(args.judges) or []
    if not names:
        raise ConfigError("--judges is empty: name at least one judge (exact, embedding, llm, cascade)")
    options = parse_judge_options(args.judge_options)
    path = find_gold_file(args.gold)
    gold = read_gold(path, dataset=args.dataset)
    out = Path(args.out or Path("runs") / "judges" / f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    identity = validate_identity(path, names, options, args)
    check_resumable(out, "judge-validate", identity)  # before any judge is built or called
    judges, unavailable = build_judges(names, options)
    if not judges:
        raise ConfigError("no judge could be built here: " + "; ".join(f"{n}: {why}" for n, why in unavailable.items()))
    con = console()
    con.print(f"[bold]unforget judge validate[/] {path}: {len(gold)} answers, judges {', '.join(names)}")
    try:
        validation, verdicts = validate_judges(gold, judges, gold_name=str(path), unavailable=unavailable,
                                               confidence=args.confidence, n_resamples=args.resamples)
    finally:
        for j in judges:
            close = getattr(j, "close", None)
            if callable(close):
                close()
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


def record_rejudged_identity(folder: Path, cfg: Any) -> None:
    """After a rejudge the run's verdicts are the new judges': run.json says so (only the judge fields change; the
    model and data fingerprints stay those of the run that produced the answers)."""
    from ..checks import judge_identities
    from ..config import to_dict
    from ..runs import read_manifest, write_manifest

    manifest = read_manifest(folder)
    if manifest is None:
        return
    data = to_dict(cfg)
    manifest.identity["judges"] = judge_identities(data)
    manifest.identity.setdefault("config", {})["judges"] = list(cfg.judges)
    from ..checks import identity_config

    manifest.identity["config"]["judge_options"] = identity_config(data.get("judge_options") or {})
    write_manifest(folder, manifest)


def run_rejudge(args: argparse.Namespace, base: dict[str, Any]) -> int:
    """``unforget eval --rejudge --out RUN``: the run's own config.yaml, with any flags and overrides on top."""
    from ..cli import ProgressTracker, progress_bar
    from ..config import load_config
    from ..runs import RunDir
    from .config import EvalConfig
    from .rejudge import rejudge_run
    from .report import print_eval_table, rejudged_metrics_document

    if not args.out:
        raise ConfigError("--rejudge needs the run folder to judge again: --out RUN")
    folder = Path(args.out)
    config = Path(args.config) if args.config else folder / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{folder} has no config.yaml: --rejudge works on an `unforget eval` run folder "
                          "(or pass -c with the config it was run with)")
    from ..config import read_yaml

    if {"train", "methods", "cells", "tasks"} & set(read_yaml(config)):
        return _rejudge_study(folder, base)
    cfg = load_config(EvalConfig, str(config), args.overrides, base=base)
    run = RunDir(folder)
    con = console()
    con.print(f"[bold]unforget eval --rejudge[/] {run.path} judges={','.join(cfg.judges)}")
    previous = run.read_metrics()
    with progress_bar() as prog:
        outcome, result = rejudge_run(cfg, run, progress=ProgressTracker(prog))
    run.write_config(cfg)
    record_rejudged_identity(run.path, cfg)
    run.write_metrics(rejudged_metrics_document(cfg, result, outcome, previous))
    print_eval_table(con, result)
    sent = ", ".join(f"{name} {n}" for name, n in outcome.sent.items())
    still = sum(outcome.still_unjudged.values())
    con.print(f"rejudged {outcome.touched} of {outcome.records} answers (sent to {sent})"
              + ("" if still else "; every answer has a verdict from every judge"))
    return report_unjudged(con, run.path, still)


def _rejudge_study(folder: Path, base: dict[str, Any]) -> int:
    """A study folder: every evaluation folder under it rejudged, their metrics and the study report rewritten."""
    from ..cli import ProgressTracker, progress_bar
    from .rejudge import rejudge_study

    con = console()
    con.print(f"[bold]unforget eval --rejudge[/] study {folder}"
              + (f" judges={','.join(base['judges'])}" if base.get("judges") else ""))
    with progress_bar() as prog:
        outcome = rejudge_study(folder, judges=base.get("judges"), progress=ProgressTracker(prog))
    for label, result in outcome.folders.items():
        still = sum(result.still_unjudged.values())
        con.print(f"{label}: rejudged {result.touched} of {result.records} answers"
                  + (f", [yellow]{still} verdicts still missing[/]" if still else ""))
    con.print(f"-> {outcome.report} report rewritten in {folder}" if outcome.report else
              f"[yellow]{folder}: no known study kind; run `unforget report {folder} --kind NAME`[/]")
    return report_unjudged(con, folder, sum(sum(r.still_unjudged.values()) for r in outcome.folders.values()))


def print_validation_table(con: Any, validation: Any) -> None:
    from rich.table import Table

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


def _estimate_cells(e: Any) -> tuple[str, str]:
    return (f"{e.value:.3f}", f"[{e.low:.3f}, {e.high:.3f}]") if e is not None else ("-", "-")


register_verb("judge", "validate judges against hand-labelled verdicts (`judge validate --gold FILE`)",
              add_judge, run_judge)
