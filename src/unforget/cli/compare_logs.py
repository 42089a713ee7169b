"""`unforget compare-logs --base B --finetuned F`: forgetting from a base and a fine-tuned model's per-sample outputs
of another harness (lmms-eval ``--log_samples``, VLMEvalKit score files), paired by document id (thin; the work is
in :mod:`unforget.evaluation.harness_logs`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from ..studies.report import write_run_report
from .arguments import add_overwrite_arg
from .console import console
from .verb import Verb
from ..runs.layout import METRICS


def add_compare_logs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True,
                   help="the base model's outputs: an lmms-eval --output_path folder or *_samples_<task>.jsonl "
                        "file, or a VLMEvalKit work folder or score file (*_result / *_auxmatch / *_results "
                        ".xlsx|.tsv|.csv)")
    p.add_argument("--finetuned", required=True, help="the fine-tuned model's outputs, of the same tasks")
    p.add_argument("--out", help="run folder to write (default: runs/compare-logs/<time>)")
    p.add_argument("--metric", help="compare this metric only (an lmms-eval metric field, a VLMEvalKit column); "
                                    "default: every per-sample metric")
    p.add_argument("--alpha", type=float, default=0.05, help="test level; intervals are at 1 - alpha (default 0.05)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_overwrite_arg(p)


def run_compare_logs(args: argparse.Namespace) -> int:
    # start-up time: scipy loads with the comparison, only once the verb runs
    from ..evaluation.harness_logs import write_harness_comparison

    out = Path(args.out or Path("runs") / "compare-logs" / time.strftime("%Y%m%d-%H%M%S"))
    folder, comparison = write_harness_comparison(out, args.base, args.finetuned, metric=args.metric,
                                                  alpha=args.alpha, n_resamples=args.resamples, seed=args.seed,
                                                  overwrite=args.overwrite)
    _, files = write_run_report(folder, None)
    con = console()
    table = Table(title=f"Forgetting (base - fine-tuned), {1 - args.alpha:.0%} intervals")
    for column in ("task", "metric", "n", "base", "fine-tuned", "forgetting", "p", "unmatched"):
        table.add_column(column)
    for t in comparison.tasks:
        table.add_row(t.task, t.metric, str(t.n), t.base.format(3), t.finetuned.format(3),
                      t.forgetting.delta.format(3), f"{t.forgetting.p_value:.3g}",
                      f"{len(t.base_only)} / {len(t.finetuned_only)}")
    con.print(table)
    for side, names in (("base", comparison.base_only_tasks), ("fine-tuned", comparison.finetuned_only_tasks)):
        if names:
            con.print(f"[yellow]logged by the {side} model only:[/] {', '.join(names)}")
    con.print(f"-> {folder / METRICS}\n-> {files.html}")
    return 0


VERB = Verb("compare-logs", "forgetting from a base and a fine-tuned model's lmms-eval / VLMEvalKit per-sample logs",
            add_compare_logs, run_compare_logs)
