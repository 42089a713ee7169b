"""The multiple-choice sample: option letters, the prompt, one sample, the scoring settings (used by the formats
and by evaluation/choices.py, which asks a question again with its options rotated).

A multiple-choice sample keeps its parts in ``meta`` so that evaluation can ask it again with the options in
another order (CircularEval): ``meta["stem"]`` (the question alone), ``meta["options"]`` (letter -> option text, in
order), ``meta["hint"]`` (context, or None) and, when the image has a class, ``meta["image_class"]`` (for the
mischoice rate). ``Sample.question`` is the whole prompt in the original order and ``Sample.answer`` the correct
letter, so every other path (training on the set, probes) reads a multiple-choice set like a VQA set.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, DataError
from ..registry import did_you_mean
from .types import CHOICE_MATCHERS, ChoiceSettings, ImageDataset, Sample

LETTERS = string.ascii_uppercase
POST_PROMPT = "Answer with the option's letter from the given choices directly."
"""LLaVA's multiple-choice instruction (LLaVA-1.5 ScienceQA/MMBench evaluation, lmms-eval's scienceqa task)."""
RANK_BY = ("letter", "text")


def choice_prompt(stem: str, options: Mapping[str, str], hint: str | None = None,
                  post_prompt: str = POST_PROMPT) -> str:
    """``Context: <hint>`` (when there is one), the question, one ``A. text`` line per option, the instruction:
    the layout of lmms-eval's scienceqa task and LLaVA-1.5's multiple-choice evaluation."""
    lines = [f"Context: {hint}"] if hint else []
    lines.append(stem)
    lines.extend(f"{letter}. {text}" for letter, text in options.items())
    if post_prompt:
        lines.append(post_prompt)
    return "\n".join(lines)


def choice_settings(matcher: str, circular: bool, rank_by: str, fmt: str) -> ChoiceSettings:
    """The scoring options of a multiple-choice format, checked."""
    if matcher not in CHOICE_MATCHERS:
        raise ConfigError(f"{fmt}: matcher '{matcher}' is unknown.{did_you_mean(str(matcher), list(CHOICE_MATCHERS))}"
                          f" Matchers: {', '.join(CHOICE_MATCHERS)}.")
    if rank_by not in RANK_BY:
        raise ConfigError(f"{fmt}: rank_by '{rank_by}' is unknown; use one of {', '.join(RANK_BY)}")
    if not isinstance(circular, bool):
        raise ConfigError(f"{fmt}: circular must be true or false, got {circular!r}")
    return ChoiceSettings(matcher=matcher, circular=circular, rank_by=rank_by)


def option_texts(values: Sequence[Any], where: str) -> dict[str, str]:
    """Option texts in order -> {"A": ..., "B": ...}; two options at least, 26 at most, each non-empty text."""
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{where}: the options must be a list of texts, found {type(values).__name__}")
    if len(values) < 2:
        raise DataError(f"{where}: a multiple-choice question needs two options at least, found {len(values)}")
    if len(values) > len(LETTERS):
        raise DataError(f"{where}: {len(values)} options; at most {len(LETTERS)} (A-Z) can be lettered")
    out: dict[str, str] = {}
    for letter, value in zip(LETTERS, values):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            raise DataError(f"{where}: option {letter} is {value!r}; options must be non-empty text")
        out[letter] = str(value).strip()
    return out


def answer_letter(value: Any, options: Mapping[str, str], where: str) -> str:
    """The correct option as a letter: a letter (any case), a 0-based index (an int, as ScienceQA stores it), or
    the exact text of one option."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: the answer is {value!r}; give the correct option's letter, index or text")
    if isinstance(value, int):
        if not 0 <= value < len(options):
            raise DataError(f"{where}: answer index {value} is outside the {len(options)} options "
                            f"(0..{len(options) - 1})")
        return LETTERS[value]
    text = str(value).strip()
    if text.upper() in options and len(text) == 1:
        return text.upper()
    matches = [letter for letter, option in options.items() if option == text]
    if len(matches) == 1:
        return matches[0]
    raise DataError(f"{where}: answer {value!r} is neither an option letter ({', '.join(options)}) nor the text of "
                    "exactly one option")


def choice_sample(sample_id: str, image: Any, stem: str, options: Mapping[str, str], answer: str, *,
                  hint: str | None = None, image_class: str | None = None, post_prompt: str = POST_PROMPT,
                  meta: Mapping[str, Any] | None = None, where: str = "") -> Sample:
    """One multiple-choice sample; ``where`` names it in errors."""
    if not isinstance(stem, str) or not stem.strip():
        raise DataError(f"{where}: the question is empty")
    if answer not in options:
        raise DataError(f"{where}: answer {answer!r} is not an option letter ({', '.join(options)})")
    if image_class is not None and (not isinstance(image_class, str) or not image_class.strip()):
        raise DataError(f"{where}: the image class is {image_class!r}; expected non-empty text or no value")
    extra = {**(meta or {}), "stem": stem, "options": dict(options), "hint": hint or None,
             "post_prompt": post_prompt}
    if image_class is not None:
        extra["image_class"] = image_class.strip()
    return Sample(id=sample_id, image=image, question=choice_prompt(stem, options, hint, post_prompt),
                  answer=answer, meta=extra)


def choice_dataset(name: str, splits: dict[str, list[Sample]], settings: ChoiceSettings, *, source: str,
                   description: str) -> ImageDataset:
    if not any(splits.values()):
        raise DataError(f"{source}: no questions in the split(s) loaded")
    return ImageDataset(name=name, task="multiple_choice", splits=splits, source=source, description=description,
                        choice=settings)
