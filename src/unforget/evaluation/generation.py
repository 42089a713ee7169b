"""The one batched generation path every evaluator uses: left padding, requests sorted by length, greedy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from ..models.loading import LoadedModel
from ..models.prompting import build_prompt, encode_batch


@dataclass
class GenerationRequest:
    question: str
    image: Image.Image | None


def generate_answers(
    lm: LoadedModel,
    requests: Sequence[GenerationRequest],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers, in the order of ``requests``. Batches group prompts of similar length (less padding)."""
    prompts = [build_prompt(lm, r.question, with_image=r.image is not None) for r in requests]
    tok = lm.tokenizer
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(requests)), key=lambda i: (requests[i].image is None, lengths[i]))
    answers: list[str] = [""] * len(requests)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        # a batch never mixes image and text-only requests
        kinds = {requests[i].image is None for i in idx}
        groups = [idx] if len(kinds) == 1 else [[i for i in idx if requests[i].image is None],
                                                [i for i in idx if requests[i].image is not None]]
        for group in groups:
            enc = encode_batch(lm, [requests[i].image for i in group], [prompts[i] for i in group])
            with torch.inference_mode():
                out = lm.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1]:]
            for i, text in zip(group, tok.batch_decode(new, skip_special_tokens=True)):
                answers[i] = text.strip()
        if on_batch is not None:
            on_batch(len(idx))
    return answers
