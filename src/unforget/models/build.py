"""Build LLaVA-architecture models from configs (the embedded default, benchmark and test models)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch
# transformers is imported as a module and its classes looked up where they are used: the package loads a class
# on first access, and listing the zoo imports this module (start-up time: the LLaVA classes take seconds to load)
import transformers

from .tokenizer import CHAT_TEMPLATE, IMAGE_TOKEN


@dataclass
class LlavaShape:
    """Sizes of a LLaVA model: a CLIP ViT vision tower, a 2-layer MLP projector, a Llama language model."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 128
    max_positions: int = 512
    vision_feature_layer: int = -1
    vocab_size: int | None = None  # None: the tokenizer's length
    projection_dim: int = 64  # CLIP text/vision projection width (zero-shot side)


def llava_config(shape: LlavaShape, vocab_size: int, image_token_id: int, pad_token_id: int | None = None) -> Any:
    vision = transformers.CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.projection_dim,
        hidden_act="quick_gelu",
    )
    text = transformers.LlamaConfig(
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_kv_heads,
        vocab_size=vocab_size,
        max_position_embeddings=shape.max_positions,
        pad_token_id=pad_token_id,
        tie_word_embeddings=False,
    )
    return transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_layer=shape.vision_feature_layer,
        vision_feature_select_strategy="default",
    )


def llava_processor(tokenizer: Any, shape: LlavaShape) -> Any:
    image_processor = _clip_image_processor_class()(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
        do_center_crop=True,
        do_convert_rgb=True,
    )
    return transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def _clip_image_processor_class() -> Any:
    """The torchvision-backed processor when torchvision is installed, else the PIL one (same output)."""
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


def build_llava(tokenizer: Any, shape: LlavaShape, *, seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialised LlavaForConditionalGeneration and its processor."""
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = llava_config(shape, shape.vocab_size or len(tokenizer), image_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, llava_processor(tokenizer, shape)
