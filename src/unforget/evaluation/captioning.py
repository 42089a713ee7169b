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

Those two are the ``builtin`` backend. The ``pycocoevalcap`` backend (the default when the package is installed)
scores as the COCO caption toolkit and the papers do: captions tokenised by the Stanford PTB tokenizer (Java; without
Java, :func:`normalize_caption`), CIDEr-D (pycocoevalcap's ``Cider``), BLEU-4 (``Bleu``, "closest" reference
length) and, with ``meteor=True`` (a caption set whose metric is ``coco``), METEOR 1.5 (Java; its start-up loads
a paraphrase table, about a minute on two busy cores, hence off by default) and SPICE (Java, only when Stanford
CoreNLP 3.6.0 is in pycocoevalcap's spice/lib: its models are a download, never fetched here). Intervals: CIDEr-D
a bootstrap of the per-image mean; BLEU-4 resamples the per-image n-gram statistics and recomputes the corpus score as ``BleuScorer`` does; METEOR and SPICE are
pycocoevalcap's aggregate with a bootstrap interval of the per-image mean (the aggregate is not a mean).
"""

from __future__ import annotations

import math
import os
import re
import shutil
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
    meteor: float | None = None  # pycocoevalcap backend with Java; 0-1
    meteor_low: float | None = None
    meteor_high: float | None = None
    spice: float | None = None  # pycocoevalcap backend with Java and CoreNLP 3.6.0's jars; 0-1
    spice_low: float | None = None
    spice_high: float | None = None
    scorer: str = "builtin"  # which backend gave the figures, and its tokenizer
    references_per_sample: float = 0.0
    empty_rate: float = 0.0  # generated captions that are empty after normalisation
    unjudged: int = 0
    skipped: int = 0
    task: str = "caption"
    accuracy: None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]], *, skipped: int = 0,
                    confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                    backend: str = "auto", meteor: bool = False) -> CaptionMetrics:
    """CIDEr-D and BLEU of a caption set with percentile bootstrap intervals over samples. ``backend``:
    ``pycocoevalcap`` (COCO toolkit; also METEOR, SPICE), ``builtin`` (module doc), ``auto``: the first installed."""
    n = len(candidates)
    if n == 0:
        return CaptionMetrics(0, None, None, None, None, None, None, skipped=skipped)
    if backend == "auto":
        backend = "pycocoevalcap" if pycocoevalcap_available() else "builtin"
    if backend == "pycocoevalcap":
        return coco_caption_metrics(candidates, references, skipped=skipped, confidence=confidence,
                                    n_resamples=n_resamples, seed=seed, meteor=meteor)
    if backend != "builtin":
        raise DataError(f"caption scorer backend '{backend}' is unknown: pycocoevalcap, builtin or auto")
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


# ------------------------------------------------------------------------------------------ pycocoevalcap


def pycocoevalcap_available() -> bool:
    try:
        # start-up time and an optional dependency: pycocoevalcap loads only when captions are scored
        import pycocoevalcap.cider.cider  # noqa: F401
    except ImportError:
        return False
    return True


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_available() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 in pycocoevalcap's spice/lib (its own first run downloads it: never here)."""
    if not (pycocoevalcap_available() and java_available()):
        return False
    import pycocoevalcap.spice.get_stanford_models as models  # optional dependency, as above

    return os.path.isfile(os.path.join(models.SPICEDIR, models.SPICELIB, f"{models.JAR}.jar"))


def coco_tokenize(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[dict, dict, str]:
    """(gts, res) keyed by sample index as pycocoevalcap's scorers take them, and the tokenizer's name: the PTB
    tokenizer when Java is present, else :func:`normalize_caption`."""
    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": c or ""}] for i, c in enumerate(candidates)}
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # optional dependency, as above

        tokenizer = PTBTokenizer()
        return tokenizer.tokenize(gts), tokenizer.tokenize(res), "pycocoevalcap (PTB tokenizer)"
    return ({i: [normalize_caption(c["caption"]) for c in v] for i, v in gts.items()},
            {i: [normalize_caption(c["caption"]) for c in v] for i, v in res.items()},
            "pycocoevalcap (no Java: unforget's normalize_caption in place of the PTB tokenizer)")


_BLEU_TINY, _BLEU_SMALL = 1e-15, 1e-9  # BleuScorer's constants


def coco_bleu_statistics(gts: dict, res: dict, n: int = BLEU_MAX_N) -> np.ndarray:
    """Per image: test length, closest reference length, n-gram guesses (n columns), matches (n columns), as
    pycocoevalcap's ``BleuScorer`` counts them with option "closest"."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test  # optional dependency, as above

    rows = []
    for key in gts:
        comps = cook_test(res[key][0], cook_refs(gts[key], n=n), eff="closest", n=n)
        rows.append([comps["testlen"], comps["reflen"], *comps["guess"], *comps["correct"]])
    return np.asarray(rows, dtype=np.float64)


def coco_bleu_from_statistics(*columns: np.ndarray, n: int = BLEU_MAX_N) -> np.ndarray:
    """Corpus BLEU-n (0-1) from per-image statistics, vectorised over a leading resample axis; ``BleuScorer``'s
    corpus formula (its tiny / small smoothing constants, brevity penalty when the test is shorter)."""
    sums = [np.asarray(c, dtype=np.float64).sum(axis=-1) for c in columns]
    testlen, reflen = sums[0], sums[1]
    guess, correct = sums[2 : 2 + n], sums[2 + n : 2 + 2 * n]
    bleu = np.ones_like(testlen)
    for k in range(n):
        bleu = bleu * (correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
    score = bleu ** (1.0 / n)
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _BLEU_TINY)), 1.0)
    return score * penalty


def coco_caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]], *, skipped: int = 0,
                         confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                         meteor: bool = False) -> CaptionMetrics:
    """The COCO caption toolkit's figures with intervals (module doc). ``bleu`` is BLEU-4 x 100, as the builtin's.
    ``meteor``: also METEOR, and SPICE where its models are installed (both need Java)."""
    from pycocoevalcap.cider.cider import Cider  # optional dependency, as above

    if len(candidates) != len(references) or any(not refs for refs in references):
        raise DataError("every caption needs a non-empty list of reference captions")
    gts, res, tokenizer = coco_tokenize(candidates, references)

    def mean_interval(values: np.ndarray, point: float | None = None) -> Estimate:
        est = bootstrap_interval(lambda s: s.mean(axis=-1), values, n_resamples=n_resamples, confidence=confidence,
                                 seed=seed)
        return est if point is None else Estimate(point, est.low, est.high, est.n, est.method, est.confidence)

    _, cider_each = Cider().compute_score(gts, res)
    cider = mean_interval(np.asarray(cider_each, dtype=np.float64))
    rows = coco_bleu_statistics(gts, res)
    bleu = bootstrap_interval(coco_bleu_from_statistics, *rows.T, n_resamples=n_resamples, confidence=confidence,
                              seed=seed)
    meteor_est = spice = None
    if meteor and java_available():
        from pycocoevalcap.meteor.meteor import Meteor  # optional dependency, as above

        scorer = Meteor()
        try:
            total, each = scorer.compute_score(gts, res)
        finally:
            del scorer  # closes the Java process
        meteor_est = mean_interval(np.asarray(each, dtype=np.float64), float(total))
    if meteor and spice_available():
        from pycocoevalcap.spice.spice import Spice  # optional dependency, as above

        total, each = Spice().compute_score(gts, res)
        spice = mean_interval(np.asarray([e["All"]["f"] for e in each], dtype=np.float64), float(total))
    return CaptionMetrics(
        n=len(candidates), cider=cider.value, cider_low=cider.low, cider_high=cider.high, bleu=100 * bleu.value,
        bleu_low=100 * bleu.low, bleu_high=100 * bleu.high, bleu_signature="pycocoevalcap Bleu(4), closest ref len",
        meteor=meteor_est.value if meteor_est else None, meteor_low=meteor_est.low if meteor_est else None,
        meteor_high=meteor_est.high if meteor_est else None, spice=spice.value if spice else None,
        spice_low=spice.low if spice else None, spice_high=spice.high if spice else None, scorer=tokenizer,
        references_per_sample=float(np.mean([len(r) for r in references])),
        empty_rate=sum(1 for c in candidates if not normalize_caption(c)) / len(candidates), skipped=skipped,
    )
