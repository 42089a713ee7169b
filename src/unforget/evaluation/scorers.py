"""Benchmark scorers of free-answer sets, as the papers score them; a dataset names its scorer in ``metric``.

- ``vqa``: the VQA accuracy of VQAv2, OK-VQA, VizWiz and TextVQA (Antol et al. 2015; the GT-Vision-Lab/VQA
  evaluation code, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, on answers processed by EvalAI's answer
  processor as LLaVA's submission script and lmms-eval's vqav2 task do): the answer is normalised (punctuation,
  number words to digits, articles dropped, contractions restored), then scored against the human answers as
  ``min(#humans who gave it / 3, 1)`` averaged over the leave-one-out subsets of the human answers.
- ``exact``: GQA's exact match (lmms-eval's gqa task: ``exact_match`` with ``ignore_case`` and
  ``ignore_punctuation``; LLaVA's convert_gqa_for_eval lowercases and strips the final period): lowercase,
  punctuation removed, surrounding space stripped, then string equality.
- ``pope``: POPE's yes/no object-hallucination questions (RUCAIBox/POPE ``evaluate.py``): the first sentence of the
  answer is read as "no" when one of its words is "no", "No" or "not", as "yes" otherwise; accuracy, precision,
  recall and F1 of "yes" (object present), and the yes-ratio of the answers.

Each per-sample score is written to the sample record (``score``), so that the same samples of a base and a
fine-tuned model pair up in the forgetting statistics as correctness does. Intervals: Wilson for the 0/1 scores,
a percentile bootstrap over samples for the VQA accuracy (fractional scores) and for POPE's ratios.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..stats import Estimate, bootstrap_interval, wilson_interval

# ---------------------------------------------------------------------------------------- VQA normalisation
# The tables are the official evaluation code's (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py
# at a013f00, "Fixed processing answers bug", 2021), entry for entry: a normalised answer must equal the
# official one for the accuracy to be the papers'.

CONTRACTIONS = {
    'aint': "ain't", 'arent': "aren't", 'cant': "can't", 'couldve': "could've", 'couldnt': "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", 'didnt': "didn't", 'doesnt': "doesn't",
    'dont': "don't", 'hadnt': "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", 'hasnt': "hasn't",
    'havent': "haven't", 'hed': "he'd", "hed've": "he'd've", "he'dve": "he'd've", 'hes': "he's", 'howd': "how'd",
    'howll': "how'll", 'hows': "how's", "Id've": "I'd've", "I'dve": "I'd've", 'Im': "I'm", 'Ive': "I've",
    'isnt': "isn't", 'itd': "it'd", "itd've": "it'd've", "it'dve": "it'd've", 'itll': "it'll", "let's": "let's",
    'maam': "ma'am", 'mightnt': "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    'mightve': "might've", 'mustnt': "mustn't", 'mustve': "must've", 'neednt': "needn't", 'notve': "not've",
    'oclock': "o'clock", 'oughtnt': "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    'shant': "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", 'shouldve': "should've",
    'shouldnt': "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": 'somebodyd',
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", 'somebodyll': "somebody'll",
    'somebodys': "somebody's", 'someoned': "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    'someonell': "someone'll", 'someones': "someone's", 'somethingd': "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", 'somethingll': "something'll",
    'thats': "that's", 'thered': "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    'therere': "there're", 'theres': "there's", 'theyd': "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    'theyll': "they'll", 'theyre': "they're", 'theyve': "they've", 'twas': "'twas", 'wasnt': "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", 'weve': "we've", 'werent': "weren't", 'whatll': "what'll",
    'whatre': "what're", 'whats': "what's", 'whatve': "what've", 'whens': "when's", 'whered': "where'd",
    'wheres': "where's", 'whereve': "where've", 'whod': "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    'wholl': "who'll", 'whos': "who's", 'whove': "who've", 'whyll': "why'll", 'whyre': "why're", 'whys': "why's",
    'wont': "won't", 'wouldve': "would've", 'wouldnt': "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", 'yall': "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", 'youd': "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", 'youll': "you'll", 'youre': "you're", 'youve': "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
               "!"]
# the official pattern, kept as written: "(?!<=\d)" is a lookahead for the text "<=" + digit (meant as a
# lookbehind), so a period is dropped unless a digit follows it
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_DIGIT_COMMA = re.compile(r"(\d)(\,)(\d)")


def vqa_punctuation(text: str) -> str:
    """The official ``processPunctuation``: a mark next to a space (or any mark in text holding a digit comma
    like "1,000") is deleted, otherwise replaced by a space; periods not followed by a digit are deleted."""
    out = text
    digit_comma = _DIGIT_COMMA.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    # the official call passes re.UNICODE (32) as the count: at most 32 periods are removed
    return _PERIOD.sub("", out, 32)


def vqa_digits_articles(text: str) -> str:
    """The official ``processDigitArticle``: lowercase, number words to digits, articles dropped, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """A model's answer as submitted for scoring: EvalAI's answer processor (LLaVA's VQAv2 submission script and
    lmms-eval apply it; mmf's ``EvalAIAnswerProcessor``): lowercase, "," and "?" removed, "'s" split off, tabs and
    newlines to spaces, then the official punctuation and digit / article steps."""
    text = (answer or "").lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_digits_articles(vqa_punctuation(text))


def vqa_accuracy(answer: str, human_answers: Sequence[str]) -> float:
    """The VQA accuracy of one answer (the official ``evaluate`` on the processed answer): for each human answer
    left out, min(#other humans who gave the answer / 3, 1); the mean over the leave-one-out subsets (10 answers of
    which k match: 0, 0.3, 0.6, 0.9, 1 for k = 0..4+). As in the official code, the human answers (and the answer
    once more) get the punctuation and digit / article steps only when the humans disagree."""
    if not human_answers:
        raise ConfigError("VQA accuracy needs the human answers of the question; this sample has none")
    predicted = normalize_vqa_answer(answer)
    humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
    if len(set(humans)) > 1:
        humans = [vqa_digits_articles(vqa_punctuation(a)) for a in humans]
        predicted = vqa_digits_articles(vqa_punctuation(predicted))
    matches = sum(1 for a in humans if a == predicted)
    total = 0.0
    for a in humans:
        total += min(1.0, (matches - (1 if a == predicted else 0)) / 3.0)
    return total / len(humans)


# ------------------------------------------------------------------------------------------------ GQA, POPE

_ALL_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_exact(text: str) -> str:
    """GQA's comparison form: lowercase, ASCII punctuation removed, surrounding space stripped."""
    return (text or "").lower().translate(_ALL_PUNCTUATION).strip()


def exact_match(answer: str, reference: str) -> float:
    return float(normalize_exact(answer) == normalize_exact(reference))


def pope_yes_no(answer: str) -> str:
    """POPE's reading of a free answer: its first sentence, commas removed, is "no" when one of its
    space-separated words is "No", "no" or "not", else "yes"."""
    text = answer or ""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_label(reference: str) -> str:
    """A POPE ground truth: "yes" or "no" (the official code reads anything but "no" as yes; we refuse it)."""
    label = (reference or "").strip().lower()
    if label not in ("yes", "no"):
        raise ConfigError(f"a POPE ground-truth answer must be 'yes' or 'no', found {reference!r}")
    return label


# ---------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Scorer:
    """How one benchmark scores a free answer: ``score(answer, reference, human_answers)`` in [0, 1]; ``binary``
    scores get Wilson intervals, others a bootstrap; ``summary`` adds the benchmark's other figures."""

    name: str
    description: str
    score: Callable[[str, str, Sequence[str]], float]
    binary: bool
    normalize: Callable[[str], str]  # the form in which answers are compared (and the answer vocabulary is read)
    summary: Callable[[Sequence[str], Sequence[str], float, int], dict[str, Estimate]] | None = None


def _vqa_score(answer: str, reference: str, humans: Sequence[str]) -> float:
    return vqa_accuracy(answer, humans)  # no fallback to the one reference: one human answer always scores 0


def _pope_score(answer: str, reference: str, humans: Sequence[str]) -> float:
    return float(pope_yes_no(answer) == pope_label(reference))


def pope_counts(answers: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted yes, truly yes) as 0/1 arrays over the samples."""
    predicted = np.array([pope_yes_no(a) == "yes" for a in answers], dtype=float)
    truth = np.array([pope_label(r) == "yes" for r in references], dtype=float)
    return predicted, truth


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _precision(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return _ratio((p * t).sum(-1), p.sum(-1))


def _recall(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return _ratio((p * t).sum(-1), t.sum(-1))


def _f1(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return _ratio(2 * (p * t).sum(-1), p.sum(-1) + t.sum(-1))  # = 2PR / (P + R)


def pope_summary(answers: Sequence[str], references: Sequence[str], confidence: float = 0.95,
                 n_resamples: int = 2000) -> dict[str, Estimate]:
    """POPE's precision, recall and F1 of "yes" (bootstrap intervals; NaN where undefined, e.g. no "yes" answer)
    and its yes-ratio (share of answers read as yes; Wilson)."""
    predicted, truth = pope_counts(answers, references)
    out = {name: bootstrap_interval(fn, predicted, truth, n_resamples=n_resamples, confidence=confidence)
           for name, fn in (("precision", _precision), ("recall", _recall), ("f1", _f1))}
    out["yes_ratio"] = wilson_interval(int(predicted.sum()), len(predicted), confidence)
    return out


SCORERS: dict[str, Scorer] = {
    s.name: s for s in (
        Scorer("vqa", "VQA accuracy: min(#humans who gave the answer / 3, 1) over leave-one-out subsets, official "
               "normalisation (VQAv2, OK-VQA, VizWiz, TextVQA)", _vqa_score, binary=False,
               normalize=normalize_vqa_answer),
        Scorer("exact", "exact match after lowercasing and removing punctuation (GQA)",
               lambda a, r, _h: exact_match(a, r), binary=True, normalize=normalize_exact),
        Scorer("pope", "POPE yes/no: accuracy, precision, recall, F1 and yes-ratio", _pope_score, binary=True,
               normalize=lambda a: pope_yes_no(a), summary=lambda a, r, c, k: pope_summary(a, r, c, k)),
    )
}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ConfigError(f"unknown metric '{name}'; metrics: {', '.join(SCORERS)}") from None


def score_answer(metric: str, answer: str, reference: str, human_answers: Sequence[str] | None) -> float:
    """One sample's benchmark score (the ``score`` of its record)."""
    return float(get_scorer(metric).score(answer or "", reference, list(human_answers or [])))


# ------------------------------------------------------------------------------------------ dataset figures


@dataclass
class BenchmarkScore:
    """A dataset's benchmark figure: ``score`` (the mean per-sample score) with its interval, and the benchmark's
    other figures (POPE: precision, recall, f1, yes_ratio)."""

    metric: str
    score: Estimate
    others: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "score": self.score.to_dict(),
                "others": {k: v.to_dict() for k, v in self.others.items()}}


def benchmark_score(metric: str, scores: Sequence[float], answers: Sequence[str], references: Sequence[str], *,
                    confidence: float = 0.95, n_resamples: int = 2000) -> BenchmarkScore | None:
    """The dataset figure from per-sample scores; None without a sample."""
    scorer = get_scorer(metric)
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return None
    if scorer.binary:
        est = wilson_interval(int(round(values.sum())), int(values.size), confidence)
    else:
        est = bootstrap_interval(lambda s: s.mean(axis=-1), values, n_resamples=n_resamples, confidence=confidence)
    others = scorer.summary(answers, references, confidence, n_resamples) if scorer.summary else {}
    return BenchmarkScore(metric, est, others)


def record_score(record: Mapping[str, Any]) -> float | None:
    """A judged record's per-sample score for paired comparisons: its benchmark ``score`` when it has one, else
    1/0 correctness; None when skipped or unjudged."""
    if record.get("skipped"):
        return None
    if record.get("score") is not None:
        return float(record["score"])
    return None if record.get("correct") is None else float(bool(record["correct"]))


def answer_vocabulary(class_names: Sequence[str], answer_list: Sequence[str], references: Sequence[str]) -> list[str]:
    """The answers a free-answer set can be ranked over and "names no class" is read against: the class list,
    else the given answer list, else the set's distinct reference answers (sorted)."""
    if class_names:
        return list(class_names)
    if answer_list:
        return list(dict.fromkeys(answer_list))
    return sorted({r for r in references if r})


def outside_vocabulary_rate(answers: Sequence[str], vocabulary: Sequence[str],
                            normalize: Callable[[str], str] = normalize_exact) -> float:
    """Share of answers whose normalised form is no normalised answer of the vocabulary."""
    if not answers:
        return 0.0
    known = {normalize(v) for v in vocabulary}
    return sum(1 for a in answers if normalize(a or "") not in known) / len(answers)
