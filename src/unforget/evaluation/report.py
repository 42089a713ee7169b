"""The metrics document of an eval run and its console table."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from ..config import to_dict
from .evaluator import EvalResult


def run_info() -> dict[str, Any]:
    """Versions, machine and git sha, as in peft's method_comparison results."""
    import torch
    import transformers

    from .. import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "unforget": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "git_sha": sha,
    }


def eval_metrics_document(cfg: Any, result: EvalResult) -> dict[str, Any]:
    return {"run_info": run_info(), "config": to_dict(cfg), **result.to_dict()}


def rejudged_metrics_document(cfg: Any, result: EvalResult, rejudge: Any, previous: dict[str, Any] | None
                              ) -> dict[str, Any]:
    """The metrics document after a rejudge: figures from the rewritten records; the encoder baselines, timings
    and sampling of the evaluation that produced the answers carried over (rejudging does not recompute them)."""
    doc = eval_metrics_document(cfg, result)
    old = (previous or {}).get("datasets") or {}
    for name, figures in doc["datasets"].items():
        for key in ("baselines", "seconds", "sampling"):
            if key in (old.get(name) or {}):
                figures[key] = old[name][key]
    doc["rejudge"] = rejudge.to_dict()
    return doc


def print_eval_table(con: Any, result: EvalResult) -> None:
    from rich.table import Table

    table = Table(title="accuracy (95% Wilson interval)", title_justify="left")
    kinds = sorted({k for r in result.results.values() for k in r.baselines})
    for col in ("dataset", "n", "MLLM accuracy", "interval", *kinds, "no-class", "top-1 share", "unjudged", "skipped"):
        table.add_column(col)
    from ..reports.names import display_names

    captions = {name: r for name, r in result.results.items() if hasattr(r.metrics, "cider")}
    shown = display_names(list(result.results))  # two sets sharing a folder name get distinct labels
    for name, r in result.results.items():
        m = r.metrics
        if name in captions:
            continue
        base = [f"{r.baselines[k].accuracy:.3f} [{r.baselines[k].accuracy_low:.2f}, {r.baselines[k].accuracy_high:.2f}]"
                if k in r.baselines else "-" for k in kinds]
        judged = (f"{m.accuracy:.3f}", f"[{m.accuracy_low:.3f}, {m.accuracy_high:.3f}]") if m.n else ("-", "-")
        table.add_row(shown[name], str(m.n), *judged, *base,
                      f"{m.no_class_rate:.3f}", f"{m.top1_share:.3f}", str(m.unjudged), str(m.skipped))
    if len(captions) < len(result.results):
        con.print(table)
    if captions:
        caption_table = Table(title="captioning (95% bootstrap intervals)", title_justify="left")
        for col in ("dataset", "n", "CIDEr-D", "BLEU-4", "empty", "skipped"):
            caption_table.add_column(col)
        for name, r in captions.items():
            m = r.metrics
            scores = (f"{m.cider:.3f} [{m.cider_low:.3f}, {m.cider_high:.3f}]",
                      f"{m.bleu:.2f} [{m.bleu_low:.2f}, {m.bleu_high:.2f}]") if m.n else ("-", "-")
            caption_table.add_row(name, str(m.n), *scores, f"{m.empty_rate:.3f}", str(m.skipped))
        con.print(caption_table)
    for name, r in result.results.items():
        split = getattr(r, "format_knowledge", None)
        if split is not None:
            con.print(f"{name}: of {split.n} answers, format broke {split.format_broke.format(3)} (the ranking knows "
                      f"the class), knowledge lost {split.knowledge_lost.format(3)}")
        if r.judge_agreement:
            con.print(f"{name}: judge agreement " + ", ".join(f"{k} {v:.3f}" for k, v in r.judge_agreement.items()))
