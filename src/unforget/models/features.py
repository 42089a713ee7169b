"""Per-image features of any supported family: the projected image tokens and the vision encoder's output.

Both come out of the model's own ``get_image_features``, called with the inputs the family's processor makes for
one (image, prompt) pair, so each family's extra inputs (LLaVA-NeXT's ``image_sizes``, Qwen2-VL's
``image_grid_thw``, Idefics3's ``pixel_attention_mask``, InstructBLIP's Q-Former prompt) reach it without a branch
per family. Families whose images have one fixed shape run in batches.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator, Sequence

import torch

from .families import family_of
from .loading import LoadedModel
from .prompting import build_prompt, encode_batch

# the prompt the processor is run with: it only places the image tokens (InstructBLIP's Q-Former reads it too)
FEATURE_PROMPT = "Describe the image."


def base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _image_inputs(lm: LoadedModel, images: Sequence[Any]) -> dict[str, Any]:
    model = base_model(lm.model)
    enc = encode_batch(lm, list(images), [build_prompt(lm, FEATURE_PROMPT)] * len(images))
    accepted = inspect.signature(model.get_image_features).parameters
    dtype = next(model.parameters()).dtype
    return {k: (v.to(dtype) if k == "pixel_values" else v) for k, v in enc.items() if k in accepted}


def _rows(out: Any, n_images: int) -> list[torch.Tensor]:
    """``get_image_features``' output as one (tokens, width) tensor per image."""
    out = getattr(out, "pooler_output", out)
    if isinstance(out, (list, tuple)):
        flat = [o.reshape(-1, o.shape[-1]) for o in out]
        return flat if len(flat) == n_images else [torch.cat(flat)]
    if n_images == 1:
        return [out.reshape(-1, out.shape[-1])]
    return [o.reshape(-1, o.shape[-1]) for o in out]


def _batches(lm: LoadedModel, images: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    step = batch_size if family_of(lm.family).batched_features else 1
    for i in range(0, len(images), step):
        yield images[i : i + step]


@torch.inference_mode()
def image_token_features(lm: LoadedModel, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
    """(images, width) float32: the mean of each image's projected image tokens, what the language model receives
    in place of the image placeholder (LLaVA-NeXT: its projected tiles before unpadding, without the newline
    tokens the language model also receives)."""
    model = base_model(lm.model)
    out: list[torch.Tensor] = []
    for chunk in _batches(lm, images, batch_size):
        rows = _rows(model.get_image_features(**_image_inputs(lm, chunk)), len(chunk))
        out.extend(r.float().mean(0) for r in rows)
    return torch.stack(out).cpu()


def _feature_module(model: Any, path: str) -> torch.nn.Module:
    for name, module in model.named_modules():
        canonical = ".".join(p for p in name.split(".") if p not in ("model", "base_model"))
        if canonical == path:
            return module
    raise LookupError(path)


@torch.inference_mode()
def vision_encoder_features(lm: LoadedModel, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
    """(images, width) float32: the mean over patches of the vision encoder's output as the projector reads it
    (LLaVA: the selected layer without CLS; Qwen2-VL: the merger's input; Idefics3: the connector's input;
    InstructBLIP: the vision model's output that the Q-Former attends to)."""
    family = family_of(lm.family)
    model = base_model(lm.model)
    module = _feature_module(model, family.feature_module)
    captured: list[torch.Tensor] = []

    def keep_input(_m: Any, args: tuple, kwargs: dict) -> None:
        captured.append(args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor)))

    def keep_output(_m: Any, _args: tuple, output: Any) -> None:
        captured.append(output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state",
                                                                                     output))

    hook = (module.register_forward_pre_hook(keep_input, with_kwargs=True) if family.feature_from == "input"
            else module.register_forward_hook(keep_output))
    out: list[torch.Tensor] = []
    try:
        for chunk in _batches(lm, images, batch_size):
            captured.clear()
            model.get_image_features(**_image_inputs(lm, chunk))
            feats = captured[0]
            if len(chunk) > 1:  # (images, tokens, width)
                out.extend(f.reshape(-1, f.shape[-1]).float().mean(0) for f in feats)
            else:
                out.append(feats.reshape(-1, feats.shape[-1]).float().mean(0))
    finally:
        hook.remove()
    return torch.stack(out).cpu()
