"""Instruction examples for training: the model's chat template, loss on the answer tokens only.

The prompt part is encoded exactly as at inference (:func:`unforget.models.prompting.build_prompt` through the
processor), and the answer is appended as the tokens the model must generate, ending with its end-of-turn token.
Every trainer in unforget (the fine-tuning engine, the zoo recipes, Model Tailor's calibration) uses this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image

from ..models.loading import LoadedModel
from ..models.prompting import build_prompt, encode_batch

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,) IGNORE_INDEX on the prompt
    pixel_values: torch.Tensor | None  # (C, H, W) or family-specific
    extra: dict[str, torch.Tensor]  # image_sizes, image_grid_thw, ... when the family needs them


def answer_suffix(lm: LoadedModel, answer: str) -> str:
    """The text after the generation prompt for ``answer``: the answer and the template's end-of-turn."""
    tok = lm.tokenizer
    eos = tok.eos_token or ""
    return f"{answer}{eos}"


def build_example(lm: LoadedModel, image: Image.Image | None, question: str, answer: str) -> Example:
    prompt = build_prompt(lm, question, with_image=image is not None)
    enc = encode_batch(lm, [image], [prompt], padding_side="right")
    prompt_ids = enc["input_ids"][0].cpu()
    ans_ids = torch.tensor(
        lm.tokenizer(answer_suffix(lm, answer), add_special_tokens=False)["input_ids"], dtype=torch.long
    )
    input_ids = torch.cat([prompt_ids, ans_ids])
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), ans_ids])
    pv = enc.get("pixel_values")
    extra = {
        k: v[0].cpu() for k, v in enc.items() if k not in ("input_ids", "attention_mask", "pixel_values")
        and isinstance(v, torch.Tensor)
    }
    return Example(input_ids, labels, pv[0].cpu() if pv is not None else None, extra)


def collate_examples(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into a model batch (input_ids, attention_mask, labels, pixel_values...)."""
    longest = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, longest), dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e.input_ids)
        input_ids[i, :L] = e.input_ids
        labels[i, :L] = e.labels
        attention[i, :L] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if examples[0].pixel_values is not None:
        batch["pixel_values"] = torch.stack([e.pixel_values for e in examples])
    for key in examples[0].extra:
        batch[key] = torch.stack([e.extra[key] for e in examples])
    return batch
