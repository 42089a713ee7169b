"""Prompts through each processor's own chat template, and model inputs for a batch of (image, prompt)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from .families import family_of
from .loading import LoadedModel


def chat_messages(question: str, *, with_image: bool = True, answer: str | None = None) -> list[dict]:
    content: list[dict] = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def build_prompt(lm: LoadedModel, question: str, *, with_image: bool = True) -> str:
    """The text of a generation prompt: user turn with the image, then the assistant's opening."""
    proc = lm.processor
    if family_of(lm.family).plain_prompt or getattr(proc, "chat_template", None) is None:
        if lm.family == "llava":
            return f"USER: <image>\n{question} ASSISTANT:" if with_image else f"USER: {question} ASSISTANT:"
        return question
    return proc.apply_chat_template(chat_messages(question, with_image=with_image), add_generation_prompt=True)


def encode_batch(
    lm: LoadedModel,
    images: Sequence[Image.Image | None],
    prompts: Sequence[str],
    *,
    padding_side: str = "left",
) -> dict[str, torch.Tensor]:
    """Processor call for a batch; left padding so generation and last-position logits line up."""
    proc = lm.processor
    tok = lm.tokenizer
    old_side = tok.padding_side
    tok.padding_side = padding_side
    try:
        has_images = any(im is not None for im in images)
        if has_images and any(im is None for im in images):
            raise ValueError("a batch must be all image samples or all text-only samples")
        kwargs: dict[str, Any] = {"text": list(prompts), "return_tensors": "pt", "padding": True}
        if has_images:
            kwargs["images"] = _images_arg(lm, images)
            enc = proc(**kwargs)
        else:
            enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    return {k: v.to(lm.device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}


def _images_arg(lm: LoadedModel, images: Sequence[Image.Image | None]) -> Any:
    if family_of(lm.family).nested_images:
        return [[im] for im in images]
    return list(images)
