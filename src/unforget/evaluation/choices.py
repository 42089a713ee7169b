"""Multiple-choice evaluation: reading an answer as an option letter (two matchers), CircularEval, rank mode over
the options, and the mischoice rate.

Matchers (a multiple-choice format's ``matcher`` option):

- ``vlmevalkit``: VLMEvalKit's ``can_infer`` (vlmeval/utils/matching_util.py, commit e8e78f05), its
  ``exact_matching`` policy (no LLM fallback). First ``can_infer_option``: the answer with ``.()[],:;!*#{}`` turned
  into spaces and split into words; when exactly one option letter is a word, and it is among the last four words,
  that letter ("A. Fowler's position" -> A, "I think it is B. Upright" -> B, "(B)" -> B); a refusal, or a lone word
  "Z" with no letter, is "no answer"; else "answer is <A-D>" anywhere ("The correct answer is **B**. ..." -> B). Then
  ``can_infer_text``: when the answer is at most twice as long as all option texts together and contains exactly one
  option's text (case-insensitive), that option. Lower-case "a" is not a letter here.
- ``strict``: the 2x2 paper's rule (arXiv 2603.14493; lihe50hz/MLLM-Forgetting, evaluators/mix_cls_result_matcher.py):
  the answer stripped, cut to what follows its last ":" when it has one, upper-cased; the option X it names is the
  one it equals or starts with "X." ("a" -> A, "A. Fowler's position" -> A, "Answer: B" -> B; "The answer is C",
  "(B)", "B) ..." and option text alone name no option).

Both read "A. Fowler's position" as A: the letter A is never taken for the article "a" (the exact judge's
normalisation drops articles, which is why multiple-choice sets are not judged by it).

CircularEval (MMBench; VLMEvalKit's ``mcq_circular_eval``): a question with N options is asked N times, the k-th time
with option i holding the original option (i + k) mod N (or with the rotated copies a circular TSV already holds);
it is right only when every rotation is answered right. The record keeps every rotation's answer.

Mischoice (the 2x2 paper's diagnostic for task-specific overfitting): on questions whose image has a class
(``image_class``) named by an option that is not the right one, the share of answers that pick that option. The
option naming the class is the one whose text equals it (case-insensitive), else the first whose text contains it
as a word. Under CircularEval the first (original-order) asking decides.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

from ..data import ImageDataset, Sample
from ..data.choices import choice_prompt
from ..data.types import ChoiceSettings
from ..errors import DataError
from ..models.loading import LoadedModel
from ..runs.records import SampleRecord
from ..scale.batching import with_oom_backoff
from ..stats import Estimate, wilson_interval
from . import ranking  # looked up at each call (ranking.rank_classes): a wrapper installed later applies
from .config import EvalConfig
from .generation import GenerationRequest, generate_answers

# ------------------------------------------------------------------------------------------------------ matchers

_VLMEVALKIT_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
                        "I'm sorry, but without the image provided", "Cannot determine the answer")
_VLMEVALKIT_SEPARATORS = ".()[],:;!*#{}"
_VLMEVALKIT_VERBOSE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
NO_ANSWER = "Z"
"""VLMEvalKit's letter for "the answer picks no option" (a refusal)."""


def vlmevalkit_option(answer: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_option``: the letter, ``"Z"`` (no answer), or None (cannot tell)."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _VLMEVALKIT_REFUSALS):
        return NO_ANSWER
    text = answer
    for ch in _VLMEVALKIT_SEPARATORS:
        text = text.replace(ch, " ")
    words = text.split()
    named = [letter for letter in options if letter in words]
    if len(named) == 1:
        if words.index(named[0]) > len(words) - 5:  # among the last four words
            return named[0]
    elif not named and NO_ANSWER in words:
        return NO_ANSWER
    verbose = _VLMEVALKIT_VERBOSE.search(answer)
    if verbose and verbose.group(1).upper() in options:
        return verbose.group(1).upper()
    return None


def vlmevalkit_text(answer: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_text``: the one option whose text the (not too long) answer contains."""
    lowered = answer.lower()
    if len(lowered) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    named = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return named[0] if len(named) == 1 else None


def vlmevalkit_letter(answer: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer`` under its ``exact_matching`` policy; its "no answer" (Z) is None here."""
    answer = str(answer)
    letter = vlmevalkit_option(answer, options) or vlmevalkit_text(answer, options)
    if letter == NO_ANSWER and NO_ANSWER not in options:
        return None
    return letter


def strict_letter(answer: str, options: Mapping[str, str]) -> str | None:
    """The 2x2 paper's rule: after the last ":" (if any), upper-cased, the answer is "X" or starts with "X."."""
    text = str(answer).strip()
    if ":" in text:
        text = text.split(":")[-1].strip()
    text = text.upper()
    for letter in options:
        if text == letter or text.startswith(f"{letter}."):
            return letter
    return None


MATCHERS: dict[str, Callable[[str, Mapping[str, str]], str | None]] = {
    "vlmevalkit": vlmevalkit_letter,
    "strict": strict_letter,
}


def read_letter(answer: str, options: Mapping[str, str], matcher: str = "vlmevalkit") -> str | None:
    """The option letter ``answer`` picks under ``matcher``; None when it picks none."""
    return MATCHERS[matcher](answer, options)


# ------------------------------------------------------------------------------------------------ the questions


@dataclass(frozen=True)
class ChoiceVariant:
    """One asking of a question: its prompt, options in this order, the right letter, the letter of the option
    naming the image's class (None: no class, or no option names it)."""

    prompt: str
    options: dict[str, str]
    answer: str
    class_letter: str | None = None


def class_letter(options: Mapping[str, str], image_class: str | None) -> str | None:
    """The option naming ``image_class``: the one equal to it (case-insensitive), else the first containing it as
    a word; None when there is no class or no option names it."""
    if not image_class:
        return None
    wanted = image_class.strip().lower()
    for letter, text in options.items():
        if text.strip().lower() == wanted:
            return letter
    pattern = re.compile(rf"(?<!\w){re.escape(wanted)}(?!\w)")
    return next((letter for letter, text in options.items() if pattern.search(text.lower())), None)


def rotate(options: Mapping[str, str], answer: str, k: int) -> tuple[dict[str, str], str]:
    """The options shifted by ``k``: letter i holds the option of letter (i + k) mod N; the right letter follows."""
    letters = list(options)
    texts = list(options.values())
    n = len(letters)
    rotated = {letters[i]: texts[(i + k) % n] for i in range(n)}
    return rotated, letters[(letters.index(answer) - k) % n]


def question_variants(sample: Sample, settings: ChoiceSettings, dataset: str = "") -> list[ChoiceVariant]:
    """How ``sample`` is asked: once, or under CircularEval once per rotation (the file's own rotated copies when
    it has them, as MMBench's TSVs do)."""
    meta = sample.meta
    if "options" not in meta or "stem" not in meta or sample.answer is None:
        raise DataError(f"sample {dataset}/{sample.id} is not a multiple-choice sample (no options / answer); load "
                        "the set with a multiple-choice format (mc-jsonl, mmbench-tsv, scienceqa)")
    image_class = meta.get("image_class")

    def variant(options: Mapping[str, str], answer: str) -> ChoiceVariant:
        return ChoiceVariant(choice_prompt(meta["stem"], options, meta.get("hint"), meta.get("post_prompt", "")),
                             dict(options), answer, class_letter(options, image_class))

    first = variant(meta["options"], sample.answer)
    if not settings.circular:
        return [first]
    if meta.get("rotations"):
        return [first] + [variant(r["options"], r["answer"]) for r in meta["rotations"]]
    return [first] + [variant(*rotate(meta["options"], sample.answer, k)) for k in range(1, len(meta["options"]))]


# ------------------------------------------------------------------------------------------------ evaluation


def choice_records(cfg: EvalConfig, lm: LoadedModel, ds: ImageDataset, loaded: Sequence[tuple[Sample, Any]],
                   tag: Mapping[str, Any], leaks_of: Callable[[str], dict[str, bool]]) -> list[dict[str, Any]]:
    """The records of a chunk of a multiple-choice set: every variant generated (or ranked), read by the set's
    matcher; a sample is right when every variant is. Its verdict stands under every configured judge's name (the
    matcher reads the answer, as the ranking does in rank mode: no judge call)."""
    settings = ds.choice or ChoiceSettings()
    per_sample = [question_variants(s, settings, ds.name) for s, _ in loaded]
    flat = [(i, v) for i, variants in enumerate(per_sample) for v in variants]
    images = [loaded[i][1] for i, _ in flat]
    ranked: list[dict[str, Any] | None] = [None] * len(flat)
    if cfg.mode == "generate":
        requests = [GenerationRequest(v.prompt, im) for (_, v), im in zip(flat, images)]
        answers = with_oom_backoff(lambda b: generate_answers(lm, requests, batch_size=b,
                                                              max_new_tokens=cfg.max_new_tokens), cfg.batch_size)
        letters = [read_letter(a, v.options, settings.matcher) for a, (_, v) in zip(answers, flat)]
        judge = f"choice-{settings.matcher}"
    else:
        ranked = rank_variants(cfg, lm, [v for _, v in flat], images, settings.rank_by)
        answers = [r["prediction"] for r in ranked]  # type: ignore[index]
        letters = [_letter_of(a, v, settings.rank_by) for a, (_, v) in zip(answers, flat)]
        judge = "rank"
    identity = {"judge": judge, "matcher": settings.matcher, "rank_by": settings.rank_by, "version": "1"}
    records: list[dict[str, Any]] = []
    position = 0
    for (s, _), variants in zip(loaded, per_sample):
        asked = []
        for v in variants:
            letter = letters[position]
            asked.append({"answer": answers[position], "letter": letter, "reference": v.answer,
                          "correct": letter == v.answer, "ranked": ranked[position], "class_letter": v.class_letter})
            position += 1
        first = asked[0]
        correct = all(a["correct"] for a in asked)
        verdict = {"prediction": first["letter"], "correct": correct, "confident": first["letter"] is not None,
                   "judge": judge, "raw": first["answer"], "error": None}
        eligible = first["class_letter"] is not None and first["class_letter"] != first["reference"]
        choice: dict[str, Any] = {"matcher": settings.matcher, "options": variants[0].options,
                                  "image_class": s.meta.get("image_class"), "class_letter": first["class_letter"],
                                  "mischoice": (first["letter"] == first["class_letter"]) if eligible else None}
        if settings.circular:
            choice["rotations"] = [{k: a[k] for k in ("answer", "letter", "reference", "correct")} for a in asked]
        record = SampleRecord(
            s.id, ds.name, tag=dict(tag), split=cfg.split, task=ds.task, question=variants[0].prompt,
            answer=first["answer"], reference=s.answer, prediction=first["letter"], correct=correct, judge=judge,
            confident=verdict["confident"], judge_identity=identity, judgements={j: dict(verdict) for j in cfg.judges},
            mode=cfg.mode, leaks=leaks_of(first["answer"]), qtype=s.meta.get("category") or None)
        if first["ranked"] is not None:
            record.rank_of_reference = first["ranked"]["rank_of_reference"]
            record.top_k = first["ranked"]["top_k"]
        record.choice = choice
        records.append(record.to_dict())
    return records


def _letter_of(candidate: str, variant: ChoiceVariant, rank_by: str) -> str | None:
    if rank_by == "letter":
        return candidate
    return next((letter for letter, text in variant.options.items() if text == candidate), None)


def rank_variants(cfg: EvalConfig, lm: LoadedModel, variants: Sequence[ChoiceVariant], images: Sequence[Any],
                  rank_by: str) -> list[dict[str, Any]]:
    """Rank mode over each variant's own options (its letters, or its option texts) with ``ranking.rank_classes``;
    variants with the same candidates are ranked in one batch: the letters of same-sized questions, the texts of
    one question's rotations (a candidate's likelihood does not depend on the order candidates are listed in)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, v in enumerate(variants):
        candidates = tuple(v.options) if rank_by == "letter" else tuple(sorted(set(v.options.values())))
        groups.setdefault(candidates, []).append(i)
    out: list[dict[str, Any]] = [{} for _ in variants]
    for candidates, members in groups.items():
        refs = [variants[i].answer if rank_by == "letter" else variants[i].options[variants[i].answer]
                for i in members]
        ranked = with_oom_backoff(
            lambda b: ranking.rank_classes(lm, list(candidates), [images[i] for i in members],
                                           [variants[i].prompt for i in members], refs, batch_size=b,
                                           normalise=cfg.rank_normalise), cfg.batch_size)
        for i, r in zip(members, ranked):
            out[i] = r
    return out


# ------------------------------------------------------------------------------------------------ metrics


@dataclass
class ChoiceSummary:
    """What a multiple-choice evaluation adds to accuracy, each with its Wilson interval (None: nothing to
    estimate). ``no_option``: answers (first asking) that pick no option. ``mischoice``: over questions whose image
    class is named by a wrong option, answers picking that option; ``mischoice_of_errors``: the same among those
    answered wrong. Under CircularEval, ``first_rotation`` is the accuracy of the original order alone (VLMEvalKit's
    "circ0") and ``every_asking`` that of all askings counted apart; the record accuracy is the circular one."""

    matcher: str
    circular: bool
    n: int
    no_option: Estimate | None
    mischoice: Estimate | None
    mischoice_of_errors: Estimate | None
    mischoice_eligible: int
    first_rotation: Estimate | None = None
    every_asking: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("no_option", "mischoice", "mischoice_of_errors", "first_rotation", "every_asking"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value is not None else None
        return out


def _wilson(hits: int, n: int) -> Estimate | None:
    return wilson_interval(hits, n) if n else None


def choice_summary(records: Sequence[Mapping[str, Any]], settings: ChoiceSettings | None = None) -> ChoiceSummary:
    """The multiple-choice figures of one evaluation's records (skipped ones left out)."""
    settings = settings or ChoiceSettings()
    kept = [r for r in records if not r.get("skipped") and isinstance(r.get("choice"), dict)]
    n = len(kept)
    flags = [r["choice"].get("mischoice") for r in kept]
    eligible = [(f, bool(r.get("correct"))) for f, r in zip(flags, kept) if f is not None]
    wrong = [f for f, right in eligible if not right]
    summary = ChoiceSummary(
        matcher=settings.matcher, circular=settings.circular, n=n,
        no_option=_wilson(sum(r.get("prediction") is None for r in kept), n),
        mischoice=_wilson(sum(f for f, _ in eligible), len(eligible)),
        mischoice_of_errors=_wilson(sum(wrong), len(wrong)), mischoice_eligible=len(eligible))
    if settings.circular:
        rotations = [r["choice"].get("rotations") or [] for r in kept]
        summary.first_rotation = _wilson(sum(bool(rot and rot[0]["correct"]) for rot in rotations), n)
        every = [a["correct"] for rot in rotations for a in rot]
        summary.every_asking = _wilson(sum(every), len(every))
    return summary
