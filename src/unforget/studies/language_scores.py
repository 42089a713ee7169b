"""Judge-free language scores inside a study: one language.jsonl row per evaluation point (epoch, run), measured
when a "text" set is among the evaluated datasets and ``language.enabled``, written once so that a resumed study
reads it back instead of measuring again. The row keeps the per-item values, so the report recomputes intervals
and pairs every point with the base model on the same items (:func:`language_point`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..evaluation.config import LanguageConfig
from ..evaluation.language import LanguageItems, language_change, language_estimates, language_items
from ..models.loading import LoadedModel
from ..reports.language import LANGUAGE_FILE, language_metrics, language_row
from ..runs import RunDir
from ..stats import json_float


def text_dataset(config: LanguageConfig, datasets: Sequence[str]) -> str | None:
    """The "text" set reference among ``datasets`` (``text`` or ``text?kinds=...``), or None: nothing to measure."""
    if not config.enabled:
        return None
    return next((d for d in datasets if d.split("?", 1)[0] == "text"), None)


def record_language(config: LanguageConfig, dataset: str | None, lm: LoadedModel, run: RunDir, tag: dict[str, Any],
                    confidence: float) -> dict[str, Any] | None:
    """Measure the language scores of ``lm`` on ``dataset`` and append them with ``tag`` to ``run``'s
    language.jsonl, once: a rerun reads the row back. Returns what metrics.json keeps (None: not measured)."""
    if dataset is None:
        return None
    done = language_row(run.path, **tag)
    if done is not None:
        return language_metrics(done)
    items = language_items(lm, dataset=dataset, limit=config.limit, batch_size=config.batch_size,
                           sampling=config.sampling, seed=config.seed)
    scores = {k: json_float(v) if isinstance(v, float) else v for k, v in items.scores().to_dict().items()}
    row = {**tag, "dataset": dataset, **scores,
           "estimates": language_estimates(items, confidence).to_dict(), "items": items.to_dict()}
    with run.appender(LANGUAGE_FILE) as app:
        app.write(row)
    return language_metrics(row)


def language_point(row: Mapping[str, Any], base_row: Mapping[str, Any] | None, confidence: float,
                   accuracy: dict[str, Any] | None = None) -> dict[str, Any]:
    """One evaluation point: both scores with intervals recomputed from the row's items at ``confidence``, and their
    change from ``base_row`` (None for the base model itself or without a base row). ``accuracy``: the judged
    accuracy on the text set at the same point (a Wilson estimate dict), carried along for the tables."""
    items = LanguageItems.from_dict(row["items"])
    est = language_estimates(items, confidence)
    change = None
    if base_row is not None and base_row is not row and int(row.get("epoch", 0)) != 0:
        change = language_change(LanguageItems.from_dict(base_row["items"]), items, confidence).to_dict()
    return {"epoch": int(row.get("epoch", 0)), "dataset": row.get("dataset"), "n_answers": len(items.answer_ids),
            "n_heldout_tokens": sum(items.heldout_tokens), "accuracy": accuracy, **est.to_dict(), "change": change}
