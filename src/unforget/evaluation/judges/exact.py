"""The rule judge: normalised matching of the answer against the class names and their synonyms."""

from __future__ import annotations

import re
from typing import Any, Sequence

from .base import JUDGES, JudgeItem, Verdict, normalise


# an answer opening with an option letter: "A.", "A)", "(A)", "A:" (multiple choice); the letter "A" would
# otherwise normalise away as the article "a"
_OPTION_LEAD = re.compile(r"\s*\(?([A-Za-z])\s*[.):](?!\w)")


class ExactJudge:
    """Finds which label the answer names, also inside a sentence ("The number is seven." -> "7").

    Several different labels named: the one named first wins and the verdict is not confident (a cascade sends
    it on); none named: prediction None, correct False, not confident."""

    name = "exact"
    description = "normalised label / synonym matching (also inside a sentence)"
    version = "2"  # 2: an answer opening with a one-letter label ("A. ...", "(A)") is read as that label

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": self.version}

    def match(self, answer: str, labels: Sequence[str], synonyms: dict[str, list[str]]) -> tuple[str | None, bool]:
        lead = _OPTION_LEAD.match(answer)
        if lead:  # "A. Fowler's position": a one-letter label opening the answer as an option letter names it
            picked = [label for label in labels if label.strip().lower() == lead.group(1).lower()]
            if len(picked) == 1:
                return picked[0], True
        text = f" {normalise(answer)} "
        hits: list[tuple[int, int, str]] = []  # (position, -length, label)
        for label in labels:
            for form in [label, *synonyms.get(label, [])]:
                norm = normalise(form)
                if not norm:
                    continue
                for m in re.finditer(rf"(?<= ){re.escape(norm)}(?= )", text):
                    hits.append((m.start(), -len(norm), label))
        if not hits:
            label = self._article_label(answer, labels)
            return label, label is not None
        # a longer label covering the same span wins ("red star" over "star")
        hits.sort()
        kept: list[tuple[int, int, str]] = []
        for pos, neg_len, label in sorted(hits, key=lambda h: (h[1], h[0])):
            end = pos - neg_len
            if all(end <= p or pos >= p - nl for p, nl, _ in kept):
                kept.append((pos, neg_len, label))
        kept.sort()
        labels_named = {label for _, _, label in kept}
        return kept[0][2], len(labels_named) == 1

    @staticmethod
    def _article_label(answer: str, labels: Sequence[str]) -> str | None:
        """Labels that normalise to nothing because they are articles (the letters "A"/"a"): named only when no
        other label is, and only as the answer's last word ("A", "The letter is A.") - "a" inside a sentence is
        an article."""
        words = normalise(answer, keep_articles=True).split()
        if not words:
            return None
        for label in labels:
            if not normalise(label) and normalise(label, keep_articles=True) == words[-1]:
                return label
        return None

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out = []
        for it in items:
            labels = list(it.class_names) or [it.reference]
            if it.reference not in labels:
                labels.append(it.reference)
            pred, confident = self.match(it.answer, labels, it.synonyms)
            out.append(Verdict(prediction=pred, correct=pred == it.reference, confident=confident,
                               judge=self.name, raw=pred))
        return out

    def stats(self) -> dict[str, Any]:
        return {}  # nothing counted

    def close(self) -> None:
        pass  # nothing held open


JUDGES.register(ExactJudge)
