"""Judges turn a free-form answer into a verdict. Registered by name and built from names here; adding one is one
new file."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from ...registry import Registry

# a judge is one module (or folder) of this package that registers itself: the first lookup imports them all
JUDGES: Registry[Any] = Registry("judge", package="unforget.evaluation.judges")


@dataclass
class JudgeItem:
    """What a judge sees: the question, the model's raw answer, the reference and the label set."""

    question: str
    answer: str
    reference: str
    class_names: Sequence[str] = ()
    synonyms: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Verdict:
    """``prediction``: the class the answer names (None: no class). ``correct`` None means unjudged (a failure,
    never counted as wrong). ``confident`` False lets a cascade fall through to the next judge."""

    prediction: str | None
    correct: bool | None
    confident: bool = True
    judge: str = ""
    raw: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"prediction": self.prediction, "correct": self.correct, "confident": self.confident,
                "judge": self.judge, "raw": self.raw, "error": self.error}


class Judge(Protocol):
    """A judge's whole interface, lifecycle included: built by name with its options (:func:`build_judges`), asked
    for verdicts, asked for its counters, closed when the caller is done with it."""

    name: str

    def identity(self) -> dict[str, Any]:
        """Everything that decides its verdicts, recorded with each (never a secret)."""
        ...

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order."""
        ...

    def stats(self) -> dict[str, Any]:
        """Its counters for metrics.json (calls, cache hits, ...); empty when it keeps none."""
        ...

    def close(self) -> None:
        """Release what it holds open (a cache file); a no-op for judges that hold nothing."""
        ...


def build_judge(name: str, options: Mapping[str, Any] | None = None) -> Judge:
    """The judge registered as ``name``, made with ``options`` (its ``judge_options.<name>``); an unknown name raises
    with a did-you-mean."""
    return JUDGES.get(name)(**(options or {}))


def build_judges(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Judge]:
    """The judges ``names``, each made with its entry of ``options`` (judge name -> options, as ``judge_options``)."""
    return [build_judge(name, (options or {}).get(name)) for name in names]


def judge_stats(judges: Sequence[Judge]) -> dict[str, dict[str, Any]]:
    """Judge name -> its counters, for the judges that keep some."""
    return {j.name: stats for j in judges if (stats := j.stats())}


_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve"]
_WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}
_ARTICLES = {"a", "an", "the"}


def normalise(text: str, keep_articles: bool = False) -> str:
    """Lower case, no accents or punctuation, no articles (unless ``keep_articles``: a label may be the letter
    "A"), number words as digits, simple plurals singular."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", " ", text)
    words = []
    for w in text.split():
        if w in _ARTICLES and not keep_articles:
            continue
        w = _WORD_TO_DIGIT.get(w, w)
        if len(w) > 3 and w.endswith("es") and w[:-2].endswith(("ss", "sh", "ch", "x")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        words.append(w)
    return " ".join(words)
