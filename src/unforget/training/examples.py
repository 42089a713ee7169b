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


# Processor outputs that run along the token sequence: the answer tokens extend them with 0 (text) and collate pads
# them with 0. Qwen2-VL/Qwen2.5-VL need mm_token_type_ids to place their multimodal rotary positions (M-RoPE).
TOKEN_ALIGNED_KEYS = ("mm_token_type_ids", "token_type_ids")


@dataclass
class Example:
    """One training sample. ``pixel_values`` and ``extra`` are the processor's outputs for this sample alone, as it
    returns them for a batch of one: (1, C, H, W) for LLaVA, (1, tiles, C, H, W) for LLaVA-NeXT and Idefics3,
    (patches, dim) for Qwen2-VL; extra holds image_sizes, image_grid_thw, pixel_attention_mask,
    qformer_input_ids, ... (batch-of-one, dim 0) and the token-aligned keys (L,) of TOKEN_ALIGNED_KEYS."""

    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,) IGNORE_INDEX on the prompt
    pixel_values: torch.Tensor | None
    extra: dict[str, torch.Tensor]


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
    extra: dict[str, torch.Tensor] = {}
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask", "pixel_values") or not isinstance(value, torch.Tensor):
            continue
        if key in TOKEN_ALIGNED_KEYS:
            extra[key] = torch.cat([value[0].cpu(), torch.zeros_like(ans_ids, dtype=value.dtype)])
        else:
            extra[key] = value.cpu()
    pv = enc.get("pixel_values")
    return Example(input_ids, labels, pv.cpu() if pv is not None else None, extra)


def collate_examples(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into a model batch (input_ids, attention_mask, labels, pixel_values...).

    Per-sample image tensors are concatenated along dim 0, which is the batch layout of every family: one row per
    image for LLaVA, all patches of all images in a row for Qwen2-VL (its image_grid_thw says which are whose).
    Where samples differ in an inner size they are zero-padded to the largest: LLaVA-NeXT's anyres tiles (the model
    keeps the count image_sizes implies), Idefics3/SmolVLM's tiles (all-zero tiles are dropped by the model), the
    Q-Former's question tokens (padding sits under qformer_attention_mask = 0).
    """
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
        batch["pixel_values"] = _concat_padded([e.pixel_values for e in examples])
    for key in examples[0].extra:
        values = [e.extra[key] for e in examples]
        if key in TOKEN_ALIGNED_KEYS:
            batch[key] = torch.stack([torch.nn.functional.pad(v, (0, longest - len(v))) for v in values])
        else:
            batch[key] = _concat_padded(values)
    return batch


def _concat_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0 after zero-padding every other dim (at its end) to the largest size."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pad: list[int] = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d - 1] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return torch.cat(padded, dim=0)
