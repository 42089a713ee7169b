"""Judge-free language scores in the study reports: the language.jsonl rows of a run folder, whether a change from
the base model is worse or better, and a sentence saying whether the text answers degraded.

The points (answer log-likelihood and held-out perplexity with bootstrap intervals, their change from the base model,
paired on the same items) are computed study-side by :func:`unforget.studies.language_scores.language_point`, which
also writes the rows; this module reads and renders them: ``language_row``, ``change_verdicts``, ``change_sentence``,
and the page parts ``language_panels`` and ``language_table_cells``. Used by the EMT and 2x2 reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from ..runs import read_jsonl
from .document import format_estimate
from .plots import LinePanel, Series
from ..runs.layout import LANGUAGE_FILE

ChangeVerdict = Literal["worse", "better", "no change shown"]


def language_row(folder: Path, **tag: Any) -> dict[str, Any] | None:
    """The last language.jsonl row of ``folder`` whose fields match ``tag`` (e.g. epoch=2); None when none does."""
    rows = [r for r in read_jsonl(folder / LANGUAGE_FILE) if all(r.get(k) == v for k, v in tag.items())]
    return rows[-1] if rows else None


def language_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """What metrics.json keeps of a row: the scores with their intervals, without the per-item values."""
    return {"dataset": row.get("dataset"), "n_answers": row.get("n_answers"),
            "n_heldout_tokens": row.get("n_heldout_tokens"), **(row.get("estimates") or {})}


def change_verdict(change: Mapping[str, Any] | None, worse_when: Literal["up", "down"]) -> ChangeVerdict:
    """"worse" / "better" when the change's interval excludes 0 on that side; otherwise "no change shown"."""
    if not change or change.get("low") is None or change.get("high") is None:
        return "no change shown"
    if change["low"] > 0:
        return "worse" if worse_when == "up" else "better"
    if change["high"] < 0:
        return "worse" if worse_when == "down" else "better"
    return "no change shown"


def change_verdicts(point: Mapping[str, Any]) -> dict[str, ChangeVerdict]:
    """Per score, whether ``point`` is worse than the base model: perplexity up, answer log-likelihood down."""
    change = point.get("change") or {}
    return {"heldout_perplexity": change_verdict(change.get("heldout_perplexity"), "up"),
            "answer_logprob": change_verdict(change.get("answer_logprob"), "down")}


def _signed_estimate(e: Mapping[str, Any] | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    text = format_estimate(e)
    return text if text.startswith("-") else "+" + text


def change_sentence(who: str, point: Mapping[str, Any], base: Mapping[str, Any], confidence: float) -> str:
    """One sentence with the numbers: ``who``'s scores against the base model's and whether the text answers
    degraded (a change counts when its ``confidence`` paired bootstrap interval excludes 0)."""
    change = point.get("change") or {}
    verdicts = change_verdicts(point)
    ppl, ll = change.get("heldout_perplexity"), change.get("answer_logprob")
    parts = [
        f"held-out perplexity {format_estimate(base['heldout_perplexity'], 2)} -> "
        f"{format_estimate(point['heldout_perplexity'], 2)}, change {_signed_estimate(ppl)} ({verdicts['heldout_perplexity']})",
        f"log-likelihood of the text set's answers {format_estimate(base['answer_logprob'])} -> "
        f"{format_estimate(point['answer_logprob'])} nats/token, change {_signed_estimate(ll)} "
        f"({verdicts['answer_logprob']})",
    ]
    worse = [k for k, v in verdicts.items() if v == "worse"]
    better = [k for k, v in verdicts.items() if v == "better"]
    if len(worse) == 2:
        outcome = "the text answers degraded on both measures"
    elif worse == ["answer_logprob"]:
        outcome = "the text answers degraded (less likely reference answers), held-out perplexity " + (
            "fell" if better else "did not change measurably")
    elif worse:
        outcome = "held-out prose got less likely but the text set's answers did not " + (
            "(they got more likely)" if better else "change measurably")
    elif better:
        outcome = "no degradation: " + " and ".join(
            "perplexity fell" if k == "heldout_perplexity" else "the answers got more likely" for k in better)
    else:
        outcome = "no change shown on either measure"
    return (f"{who}, epoch {point['epoch']} vs the base model: " + "; ".join(parts)
            + f"; {outcome} ({confidence:.0%} paired bootstrap intervals over items).")


# ------------------------------------------------------------------------------------------------ page parts


def language_panels(curves: Mapping[str, Sequence[Mapping[str, Any]]], label_of: Mapping[str, str]) -> list[LinePanel]:
    """Two LinePanels against epoch: held-out perplexity and answer log-likelihood, one series per curve, with
    their bootstrap intervals as error bars."""
    panels = [LinePanel("held-out perplexity", [], ylabel="perplexity", xlabel="epoch", integer_x=True),
              LinePanel("text-set answers", [], ylabel="log-likelihood, nats/token", xlabel="epoch", integer_x=True)]
    for key, panel in zip(("heldout_perplexity", "answer_logprob"), panels):
        for name, curve in curves.items():
            est = [p.get(key) for p in curve]
            panel.series.append(Series(label_of.get(name, name), [p["epoch"] for p in curve],
                                       [e["value"] if e else None for e in est],
                                       [e["low"] if e else None for e in est],
                                       [e["high"] if e else None for e in est]))
    return panels


LANGUAGE_COLUMNS = ["text accuracy", "answer log-likelihood", "held-out perplexity", "change in log-likelihood",
                    "change in perplexity"]


def language_table_cells(point: Mapping[str, Any]) -> list[str]:
    """The LANGUAGE_COLUMNS cells of one point (changes are after - base; "-" for the base model itself)."""
    change = point.get("change") or {}
    return [format_estimate(point.get("accuracy")), format_estimate(point["answer_logprob"]),
            format_estimate(point["heldout_perplexity"], 2), _signed_estimate(change.get("answer_logprob")),
            _signed_estimate(change.get("heldout_perplexity"))]
