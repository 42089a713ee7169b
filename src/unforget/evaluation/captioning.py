"""Caption metrics: CIDEr-D and BLEU of generated captions against every reference caption of a sample.

- Captions are normalised the same way for both metrics (:func:`normalize_caption`: lowercase, punctuation
  replaced by spaces), in place of the COCO toolkit's Java PTB tokenizer.
- CIDEr-D (Vedantam et al. 2015) is computed as pycocoevalcap's ``Cider`` scorer does, numbers included:
  TF-IDF n-gram vectors (n = 1..4) with document frequencies over the evaluated set's references, clipped
  cosine similarity, a Gaussian length penalty (sigma 6), averaged over references and n, times 10. Each
  sample gets its own score; the set's CIDEr is their mean, and its interval a bootstrap over samples with
  the document frequencies held at the whole set's (they depend on the references only, so a sample's score
  is the same whichever model captioned it, and scores of two models pair up by sample).
- BLEU is sacrebleu's corpus BLEU (13a tokenisation, exponential smoothing, 4-grams) with a variable number
  of references per sample; its interval resamples the per-sample sufficient statistics
  (``stats.bootstrap_interval``) and recomputes the corpus score from them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from sacrebleu.metrics import BLEU

from ..errors import DataError
from ..stats import Estimate, bootstrap_interval, json_float

CIDER_MAX_N = 4
CIDER_SIGMA = 6.0
BLEU_MAX_N = 4
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_caption(text: str) -> str:
    """Lowercase, punctuation (and underscores) replaced by spaces, single spaces between words."""
    return " ".join(_PUNCTUATION.sub(" ", (text or "").lower()).split())


def sample_references(answer: str | None, captions: Sequence[str] | None) -> list[str]:
    """A caption sample's references: its reference caption first, then the other captions, without repeats."""
    refs = [c for c in [answer, *(captions or [])] if c]
    return list(dict.fromkeys(refs))


# ------------------------------------------------------------------------------------------------------ CIDEr-D


def _ngram_counts(words: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, max_n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _tfidf(counts: Counter[tuple[str, ...]], document_frequency: Counter[tuple[str, ...]], log_images: float,
           max_n: int) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(max_n)]
    norm = [0.0] * max_n
    length = 0
    for ngram, tf in counts.items():
        order = len(ngram) - 1
        value = float(tf) * (log_images - math.log(max(1.0, document_frequency[ngram])))
        vec[order][ngram] = value
        norm[order] += value * value
        if order == 1:
            # the reference scorer's "length" counts bigrams (its test is on the 0-based order); kept for
            # numbers comparable with published CIDEr-D
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def cider_d_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], *, max_n: int = CIDER_MAX_N,
                   sigma: float = CIDER_SIGMA) -> np.ndarray:
    """Per-sample CIDEr-D of ``candidates[i]`` against ``references[i]`` (already normalised or raw text:
    both are normalised here). Document frequencies come from all the references given, so score a whole
    evaluation set at once. Returns an array of len(candidates)."""
    if len(candidates) != len(references):
        raise DataError(f"{len(candidates)} captions but {len(references)} reference lists: give one list per caption")
    if any(not refs for refs in references):
        index = next(i for i, refs in enumerate(references) if not refs)
        raise DataError(f"caption {index} has no reference caption to compare with")
    cand_counts = [_ngram_counts(normalize_caption(c).split(), max_n) for c in candidates]
    ref_counts = [[_ngram_counts(normalize_caption(r).split(), max_n) for r in refs] for refs in references]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for refs in ref_counts:
        document_frequency.update({ngram for counts in refs for ngram in counts})
    log_images = math.log(float(len(candidates))) if candidates else 0.0
    scores = np.zeros(len(candidates))
    for i, (cand, refs) in enumerate(zip(cand_counts, ref_counts)):
        vec, norm, length = _tfidf(cand, document_frequency, log_images, max_n)
        total = np.zeros(max_n)
        for ref in refs:
            vec_ref, norm_ref, length_ref = _tfidf(ref, document_frequency, log_images, max_n)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                value = sum(min(v, vec_ref[n].get(g, 0.0)) * vec_ref[n].get(g, 0.0) for g, v in vec[n].items())
                if norm[n] != 0 and norm_ref[n] != 0:
                    value /= norm[n] * norm_ref[n]
                total[n] += value * penalty
        scores[i] = float(np.mean(total)) / len(refs) * 10.0
    return scores


# --------------------------------------------------------------------------------------------------------- BLEU


def _bleu_metric() -> Any:
    return BLEU(tokenize="13a", smooth_method="exp", max_ngram_order=BLEU_MAX_N)


def bleu_statistics(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[np.ndarray, str]:
    """Per-sample BLEU sufficient statistics (rows: hyp length, closest ref length, matches n=1..4, totals
    n=1..4) of normalised captions, as sacrebleu counts them, and sacrebleu's signature."""
    metric = _bleu_metric()
    hyps = [normalize_caption(c) for c in candidates]
    most = max((len(r) for r in references), default=0)
    # sacrebleu takes reference streams (the i-th reference of every sample); None where a sample has fewer
    streams = [[normalize_caption(refs[k]) if k < len(refs) else None for refs in references] for k in range(most)]
    rows = metric._extract_corpus_statistics(hyps, streams)
    return np.asarray(rows, dtype=np.float64).reshape(len(hyps), 2 + 2 * BLEU_MAX_N), str(metric.get_signature())


def bleu_from_statistics(*columns: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0-100) from summed statistics, vectorised over a leading axis: ``columns`` are the
    statistic columns, each of shape (k, n), summed over the last axis. sacrebleu's ``compute_bleu`` with
    exponential smoothing, step for step."""
    sums = [np.asarray(c, dtype=np.float64).sum(axis=-1) for c in columns]
    sys_len, ref_len = sums[0], sums[1]
    correct = np.stack(sums[2 : 2 + BLEU_MAX_N], axis=-1)
    total = np.stack(sums[2 + BLEU_MAX_N :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_sys = np.where(sys_len > 0, sys_len, 1.0)
        bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1.0 - ref_len / safe_sys), 0.0), 1.0)
        zero = correct == 0
        smooth = np.power(2.0, np.cumsum(zero, axis=-1))
        safe_total = np.where(total > 0, total, 1.0)
        precision = np.where(zero, 100.0 / (smooth * safe_total), 100.0 * correct / safe_total)
        score = bp * np.exp(np.log(precision).mean(axis=-1))
    # no match at all, or an order with no n-gram (sacrebleu stops there and scores 0 at full order)
    return np.where(~zero.all(axis=-1) & (total > 0).all(axis=-1), score, 0.0)


# ----------------------------------------------------------------------------------------------------- metrics


@dataclass
class CaptionMetrics:
    """Scores of one caption set. ``cider`` is the mean per-sample CIDEr-D (0-10 scale, x100 in COCO tables
    is not applied), ``bleu`` the corpus BLEU-4 (0-100); both with bootstrap intervals over samples.
    ``accuracy`` is None: a caption set has no accuracy, and code reading ``.accuracy`` sees that."""

    n: int
    cider: float | None
    cider_low: float | None
    cider_high: float | None
    bleu: float | None
    bleu_low: float | None
    bleu_high: float | None
    bleu_signature: str = ""
    references_per_sample: float = 0.0
    empty_rate: float = 0.0  # generated captions that are empty after normalisation
    unjudged: int = 0
    skipped: int = 0
    task: str = "caption"
    accuracy: None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]], *, skipped: int = 0,
                    confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> CaptionMetrics:
    """CIDEr-D and BLEU of a caption set with percentile bootstrap intervals over samples."""
    n = len(candidates)
    if n == 0:
        return CaptionMetrics(0, None, None, None, None, None, None, skipped=skipped)
    cider = cider_estimate(candidates, references, confidence=confidence, n_resamples=n_resamples, seed=seed)
    bleu, signature = bleu_estimate(candidates, references, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return CaptionMetrics(
        n=n, cider=cider.value, cider_low=cider.low, cider_high=cider.high, bleu=bleu.value, bleu_low=bleu.low,
        bleu_high=bleu.high, bleu_signature=signature,
        references_per_sample=float(np.mean([len(r) for r in references])),
        empty_rate=sum(1 for c in candidates if not normalize_caption(c)) / n, skipped=skipped,
    )


def cider_estimate(candidates: Sequence[str], references: Sequence[Sequence[str]], *, confidence: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> Estimate:
    scores = cider_d_scores(candidates, references)
    return bootstrap_interval(lambda s: s.mean(axis=-1), scores, n_resamples=n_resamples, confidence=confidence,
                              seed=seed)


def bleu_estimate(candidates: Sequence[str], references: Sequence[Sequence[str]], *, confidence: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> tuple[Estimate, str]:
    rows, signature = bleu_statistics(candidates, references)
    estimate = bootstrap_interval(bleu_from_statistics, *rows.T, n_resamples=n_resamples, confidence=confidence,
                                  seed=seed)
    return estimate, signature


def caption_record_scores(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-sample CIDEr-D of caption records (``answer`` vs ``references``), by sample id."""
    kept = [r for r in records if not r.get("skipped")]
    scores = cider_d_scores([r.get("answer") or "" for r in kept], [r["references"] for r in kept]) if kept else []
    return {r["id"]: float(s) for r, s in zip(kept, scores)}
