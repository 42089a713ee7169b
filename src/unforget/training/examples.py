"""Instruction examples for training: the model's chat template, loss on the answer tokens only.

The prompt part is encoded exactly as at inference (:func:`unforget.models.prompting.build_prompt` through the
processor), and the answer is appended as the tokens the model must generate, ending with its end-of-turn token.
Every trainer in unforget (the fine-tuning engine, the zoo recipes, Model Tailor's calibration) uses this path.

A multi-turn conversation (:func:`build_conversation_example`) is the same thing repeated: the first prompt as at
inference, then for every assistant turn its reply and end-of-turn token (labelled), and between two replies the
text the chat template renders there (not labelled). A one-turn conversation is exactly :func:`build_example`.
Text-only and image examples may share a batch (:func:`collate_examples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image

from ..data.conversation import Conversation
from ..errors import DataError
from ..models.loading import LoadedModel
from ..models.prompting import build_prompt, chat_messages, encode_batch

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
    return _encode_segments(lm, image, prompt, [(answer, None)])


def build_conversation_example(lm: LoadedModel, image: Image.Image | None, conversation: Conversation) -> Example:
    """A multi-turn example: labels on every assistant reply (and its end-of-turn token), -100 elsewhere.

    The first prompt is the inference prompt of the first user turn (with the system prompt, when there is one);
    the text between reply k and prompt k+1 is what the chat template renders after reply k up to the next
    generation prompt, less the end-of-turn token the reply already ends with."""
    pairs = conversation.pairs
    with_image = image is not None
    if not conversation.system:
        first = build_prompt(lm, pairs[0][0], with_image=with_image)
    else:
        first = _render(lm, conversation, 1, with_image, generation=True)
    rest: list[tuple[str, str | None]] = [(pairs[0][1], None)]
    for k in range(1, len(pairs)):
        rest.append((pairs[k][1], _between_replies(lm, conversation, k, with_image)))
    return _encode_segments(lm, image, first, rest)


def _render(lm: LoadedModel, conversation: Conversation, users: int, with_image: bool, *, generation: bool) -> str:
    """The chat template's text of the first ``users`` user turns and the replies between them (and the reply of
    the last one, unless ``generation``: then the generation prompt after it)."""
    proc = lm.processor
    pairs = conversation.pairs[:users]
    if not build_prompt(lm, "", with_image=False):  # the family's prompt is the bare question: no turns to render
        raise DataError(f"model family '{lm.family}' has no chat template, so a multi-turn conversation or a "
                        "system prompt cannot be rendered for it; use one-turn samples without a system prompt")
    if getattr(proc, "chat_template", None) is None:
        # LLaVA v1's conversation format (conv_vicuna_v1): "USER: <image>\nq ASSISTANT: a</s>USER: q2 ASSISTANT:"
        eos = lm.tokenizer.eos_token or ""
        text = f"{conversation.system} " if conversation.system else ""
        for k, (question, answer) in enumerate(pairs):
            image = "<image>\n" if with_image and k == 0 else ""
            text += f"USER: {image}{question} ASSISTANT:"
            if k < len(pairs) - 1 or not generation:
                text += f"{answer}{eos}"
        return text
    messages: list[dict] = []
    if conversation.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": conversation.system}]})
    for k, (question, answer) in enumerate(pairs):
        last = k == len(pairs) - 1
        messages += chat_messages(question, with_image=with_image and k == 0,
                                  answer=None if last and generation else answer)
    return proc.apply_chat_template(messages, add_generation_prompt=generation)


def _between_replies(lm: LoadedModel, conversation: Conversation, k: int, with_image: bool) -> str:
    """The text after reply ``k - 1`` (0-based pairs) up to the generation prompt of user turn ``k``."""
    before = _render(lm, conversation, k, with_image, generation=False)
    after = _render(lm, conversation, k + 1, with_image, generation=True)
    reply = conversation.pairs[k - 1][1]
    end = before.rfind(reply)
    if end < 0 and reply.strip():
        reply = reply.strip()  # templates that trim the content
        end = before.rfind(reply)
    if end < 0 or not after.startswith(before):
        raise DataError(f"model family '{lm.family}': its chat template does not render a conversation as the "
                        "conversation so far plus the next turns, so the replies cannot be located for the loss; "
                        "train on one-turn samples with this model")
    between = after[end + len(reply):]
    eos = lm.tokenizer.eos_token or ""
    return between[len(eos):] if eos and between.startswith(eos) else between


def _encode_segments(lm: LoadedModel, image: Image.Image | None, prompt: str,
                     rest: list[tuple[str, str | None]]) -> Example:
    """``prompt`` through the processor (with the image), then for each (reply, text before it) the text before it
    (not labelled, None: nothing) and the reply with its end-of-turn token (labelled)."""
    enc = encode_batch(lm, [image], [prompt], padding_side="right")
    prompt_ids = enc["input_ids"][0].cpu()
    ids = [prompt_ids]
    labels = [torch.full_like(prompt_ids, IGNORE_INDEX)]
    for reply, before in rest:
        if before:
            before_ids = _tokens(lm, before)
            ids.append(before_ids)
            labels.append(torch.full_like(before_ids, IGNORE_INDEX))
        reply_ids = _tokens(lm, answer_suffix(lm, reply))
        ids.append(reply_ids)
        labels.append(reply_ids)
    input_ids = torch.cat(ids)
    appended = len(input_ids) - len(prompt_ids)
    extra: dict[str, torch.Tensor] = {}
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask", "pixel_values") or not isinstance(value, torch.Tensor):
            continue
        if key in TOKEN_ALIGNED_KEYS:
            extra[key] = torch.cat([value[0].cpu(), torch.zeros(appended, dtype=value.dtype)])
        else:
            extra[key] = value.cpu()
    pv = enc.get("pixel_values")
    return Example(input_ids, torch.cat(labels), pv.cpu() if pv is not None else None, extra)


def _tokens(lm: LoadedModel, text: str) -> torch.Tensor:
    return torch.tensor(lm.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


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
    # text-only examples have no image tensors: the image rows are those of the image examples, in batch order
    # (the model places them at its image tokens, which text-only rows do not hold)
    pixels = [e.pixel_values for e in examples if e.pixel_values is not None]
    if pixels:
        batch["pixel_values"] = _concat_padded(pixels)
    for key in dict.fromkeys(k for e in examples for k in e.extra):
        if key in TOKEN_ALIGNED_KEYS:
            dtype = next(e.extra[key].dtype for e in examples if key in e.extra)
            values = [e.extra.get(key, torch.zeros(len(e.input_ids), dtype=dtype)) for e in examples]
            batch[key] = torch.stack([torch.nn.functional.pad(v, (0, longest - len(v))) for v in values])
        else:
            batch[key] = _concat_padded([e.extra[key] for e in examples if key in e.extra])
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
