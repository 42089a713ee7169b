"""What the LLM judge asks and how it reads the reply, the same for every backend: the EMT yes / no prompt, the reply
parser, and the verdict of one completion."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..base import JudgeItem

# Bump PROMPT_VERSION whenever JUDGE_PROMPT changes: it is part of every cache key.
PROMPT_VERSION = "emt-yes-no-1"
JUDGE_PROMPT = (
    "You are grading the answer a vision-language model gave to a question about an image.\n"
    "Question: {question}\n"
    "Correct label: {label}\n"
    "Model answer: {answer}\n"
    "Is the model answer correct, that is, does it give the correct label (or an equivalent name for it) as its "
    "answer? Reply with one word: yes or no."
)


def label_text(item: JudgeItem) -> str:
    """The label as the judge sees it: the reference, with its synonyms when the dataset has some."""
    synonyms = [s for s in item.synonyms.get(item.reference, []) if s != item.reference]
    return f"{item.reference} (also accepted: {', '.join(synonyms)})" if synonyms else item.reference


def judge_prompt(question: str, label: str, answer: str) -> str:
    return JUDGE_PROMPT.format(question=question.strip(), label=label, answer=answer.strip())


# ------------------------------------------------------------------------------------------------ reply parsing

_REASONING_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_REASONING_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"</(think|thinking|reasoning)\s*>", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# "no" is an answer when it stands alone ("No.", "no, it names a circle", "so: no"), not a determiner ("no match")
_NO_ANSWER = re.compile(r"\bno\b(?=\s*(?:[^\w\s]|$))")
_YES = re.compile(r"\byes\b")
_NEGATIONS = frozenset({"not", "never", "cannot", "neither", "nor"})
_HEDGES = re.compile(r"\b(maybe|perhaps|unsure|unclear|uncertain|not sure|no idea|(?:don't|do not|cannot|can't) "
                     r"(?:know|tell|say|determine|be sure))\b")
SHORT_REPLY_WORDS = 40  # a reply this short is read whole; a longer one by its first word and its last sentence


def final_answer(reply: str) -> str | None:
    """The reply without its reasoning: ``<think>...</think>`` blocks removed, and only what follows a closing tag
    whose opening tag was in the prompt (some chat templates open it for the model). None when a reasoning block is
    still open: the model was cut off before it answered."""
    text = _REASONING_BLOCK.sub(" ", reply)
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    return None if _REASONING_OPEN.search(text) else text


def _verdict_of(text: str) -> bool | None:
    """The single yes / no ``text`` gives as its answer: None for neither, for both, for a negated or hedged one
    ("not yes", "I don't know", "yes or no?")."""
    text = text.lower().replace("\u2019", "'")
    if _HEDGES.search(text):
        return None
    found: set[bool] = set()
    if _WORD.findall(text)[:1] == ["no"]:  # "No it is a circle": an opening "no" is an answer, whatever follows
        found.add(False)
    for verdict, pattern in ((True, _YES), (False, _NO_ANSWER)):
        for m in pattern.finditer(text):
            before = _WORD.findall(text[: m.start()])[-2:]
            if any(w in _NEGATIONS or w.endswith("n't") for w in before):
                return None
            found.add(verdict)
    return found.pop() if len(found) == 1 else None


def parse_yes_no(reply: str | None) -> bool | None:
    """True / False for a reply that says yes / no, None for anything else.

    Reasoning blocks are dropped first (an unclosed one means no answer yet: None). A short reply
    (``SHORT_REPLY_WORDS``) is read whole: "yes", "**Yes**, it is correct", "The answer is yes.", "Answer: no"; a longer
    one by its first word and its last sentence, which must not disagree. A reply naming both, neither, a negated
    one ("not yes") or hedging ("I don't know", "maybe") is None."""
    if not reply:
        return None
    text = final_answer(reply)
    if text is None or not text.strip():
        return None
    words = _WORD.findall(text.lower())
    if len(words) <= SHORT_REPLY_WORDS:
        return _verdict_of(text)
    first = {"yes": True, "no": False}.get(words[0])
    sentences = [s for s in re.split(r"[.!?\n]+", text) if _WORD.search(s.lower())]
    last = _verdict_of(sentences[-1]) if sentences else None
    said = {v for v in (first, last) if v is not None}
    return said.pop() if len(said) == 1 else None


@dataclass
class Completion:
    """One backend reply: ``text`` None with ``error`` when no usable reply came back."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    error: str | None = None
    transport_failure: bool = False  # True: no reply at all (vs. a reply we could not read)
    not_sent: bool = False  # True: never sent, the judge had given up on the endpoint
    finish_reason: str | None = None
    logprobs: dict[str, float] | None = None  # decide="logprobs": the best log-probability of "yes" and of "no"


def decide_completion(completion: Completion, max_tokens: int | None = None) -> tuple[bool | None, str | None]:
    """(verdict, error) of one reply: by the likelier of yes / no where log-probabilities came back, else by parsing
    the text; an undecidable reply's error says why (cut at ``max_tokens``, neither yes nor no)."""
    if completion.logprobs:
        yes, no = completion.logprobs.get("yes", -math.inf), completion.logprobs.get("no", -math.inf)
        if yes != no:
            return yes > no, None
    correct = parse_yes_no(completion.text)
    if correct is not None or completion.text is None:
        return correct, completion.error
    if completion.finish_reason == "length" and max_tokens and max_tokens > 1:
        return None, (f"reply cut at max_tokens={max_tokens} before a yes or no (finish_reason 'length'; raise "
                      f"judge_options.llm.max_tokens): {completion.text[:200]!r}")
    return None, f"reply is neither yes nor no: {completion.text[:200]!r}"
