"""Multi-turn conversations: the data model the conversation formats (``llava-conversations``, ``sharegpt``,
``alpaca``) put on a sample, and the trainer reads to put the loss on every assistant turn.

A conversation sample carries its :class:`Conversation` in ``Sample.meta["conversation"]``; its ``question`` and
``answer`` are the first user turn and the first assistant reply, so that the sample also reads as a one-turn VQA
(or text) sample wherever a conversation is not understood. The image, when there is one, belongs to the first user
turn (LLaVA moves its ``<image>`` placeholder there, ``llava/train/train.py: preprocess_multimodal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import DataError

Role = Literal["user", "assistant"]
CONVERSATION_KEY = "conversation"
"""The key of ``Sample.meta`` that holds a sample's :class:`Conversation`."""


@dataclass(frozen=True)
class ChatTurn:
    role: Role
    text: str


@dataclass(frozen=True)
class Conversation:
    """User and assistant turns in turn (user first, assistant last) and an optional system prompt."""

    turns: tuple[ChatTurn, ...]
    system: str = ""

    def __post_init__(self) -> None:
        if not self.turns or len(self.turns) % 2:
            raise DataError(f"a conversation needs user/assistant pairs, got {len(self.turns)} turns")
        for i, turn in enumerate(self.turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if turn.role != expected:
                raise DataError(f"conversation turn {i + 1} is '{turn.role}' where '{expected}' belongs "
                                "(turns alternate user, assistant, starting with user)")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(user text, assistant reply) of every exchange, in order."""
        return [(self.turns[i].text, self.turns[i + 1].text) for i in range(0, len(self.turns), 2)]
