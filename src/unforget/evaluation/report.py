"""The metrics document of an eval run."""

from __future__ import annotations

from typing import Any

from ..config import to_dict
from ..runs.provenance import run_info
from .evaluator import EvalResult


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
