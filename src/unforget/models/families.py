"""Each supported Hugging Face multimodal family's quirks, in one place.

Everything else in unforget reaches a model through the same calls (AutoProcessor-style processor, chat template,
``model(**batch)``, ``generate``, ``get_image_features``); what differs between families is listed here, keyed by
the config's ``model_type``: where the vision encoder and the projector live (tensor names for tailoring, the
module whose input is the "vision feature" of the linear probe), how images are passed to the processor, whether
the processor brings a video part (needs torchvision) and whether the visual-text alignment applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# the language model's transformer blocks, in either naming scheme (``language_model.model.layers`` saved,
# ``model.language_model.layers`` in memory: patterns are searched in names without their ``model.`` parts)
_LANGUAGE_BLOCKS = r"language_model\.layers\."
# Qwen2-VL and its successors save the language model's blocks as ``model.layers.N`` (no language_model part)
_QWEN_LANGUAGE_BLOCKS = (r"(?:^|language_model\.)layers\.",)


@dataclass(frozen=True)
class Family:
    """One model family (a transformers ``model_type``)."""

    model_type: str
    title: str  # the name researchers use
    example: str  # a released checkpoint of the family
    # tensor-name patterns (regular expressions) of the language model's blocks and of the projector: what
    # Model Tailor and the merging baselines consider by default
    language_blocks: tuple[str, ...] = (_LANGUAGE_BLOCKS,)
    projector: tuple[str, ...] = (r"multi_modal_projector\.",)
    # the module whose input (``feature_from="input"``) or output is the vision encoder's feature as the rest of the
    # model reads it: the linear probe's features (a module path, without ``model.`` parts)
    feature_module: str = "multi_modal_projector"
    feature_from: Literal["input", "output"] = "input"
    # the projector's input is (images, tokens, width) for a batch of equally sized images; False where images are
    # tiled or flattened into one sequence (features are then taken one image at a time)
    batched_features: bool = False
    # the processor takes one list of images per prompt
    nested_images: bool = False
    # released checkpoints ship no chat template: the question is the whole prompt
    plain_prompt: bool = False
    # the processor has a video part (a video processor that needs torchvision); unforget loads the image part only
    video_processor: bool = False
    # why the visual-text alignment (image tokens against word embeddings) does not apply; None: it applies
    no_alignment: str | None = None


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llava", "LLaVA-1.5", "llava-hf/llava-1.5-7b-hf", batched_features=True),
    Family("llava_next", "LLaVA-NeXT", "llava-hf/llava-v1.6-mistral-7b-hf",
           projector=(r"multi_modal_projector\.", r"image_newline")),
    Family("llava_onevision", "LLaVA-OneVision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
           projector=(r"multi_modal_projector\.", r"image_newline"), video_processor=True),
    Family("qwen2_vl", "Qwen2-VL", "Qwen/Qwen2-VL-2B-Instruct", language_blocks=_QWEN_LANGUAGE_BLOCKS,
           projector=(r"visual\.merger\.",),
           feature_module="visual.merger", video_processor=True),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-3B-Instruct", language_blocks=_QWEN_LANGUAGE_BLOCKS,
           projector=(r"visual\.merger\.",),
           feature_module="visual.merger", video_processor=True),
    Family("qwen3_vl", "Qwen3-VL", "Qwen/Qwen3-VL-2B-Instruct", language_blocks=_QWEN_LANGUAGE_BLOCKS,
           projector=(r"visual\.merger\.", r"visual\.deepstack_merger_list\."), feature_module="visual.merger",
           video_processor=True),
    Family("internvl", "InternVL", "OpenGVLab/InternVL3-1B-hf", video_processor=True),
    Family("gemma3", "Gemma 3", "google/gemma-3-4b-it", batched_features=True, nested_images=True),
    Family("paligemma", "PaliGemma", "google/paligemma-3b-mix-224", batched_features=True, plain_prompt=True),
    Family("idefics3", "Idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", language_blocks=(r"text_model\.layers\.",),
           projector=(r"connector\.",), feature_module="connector", nested_images=True),
    Family("idefics2", "Idefics2", "HuggingFaceM4/idefics2-8b", language_blocks=(r"text_model\.layers\.",),
           projector=(r"connector\.",), feature_module="connector", nested_images=True),
    Family("smolvlm", "SmolVLM", "HuggingFaceTB/SmolVLM-256M-Instruct", language_blocks=(r"text_model\.layers\.",),
           projector=(r"connector\.",), feature_module="connector", nested_images=True, video_processor=True),
    Family("instructblip", "InstructBLIP", "Salesforce/instructblip-vicuna-7b",
           projector=(r"qformer\.", r"query_tokens", r"language_projection\."), feature_module="vision_model",
           feature_from="output", batched_features=True, plain_prompt=True),
    Family("mllama", "Llama-3.2-Vision", "meta-llama/Llama-3.2-11B-Vision-Instruct",
           feature_module="multi_modal_projector", nested_images=True,
           no_alignment="Llama-3.2-Vision reads the image through cross-attention layers, not as tokens among the "
                        "word embeddings, so image tokens and class-name embeddings share no space to compare"),
)}

# Unknown model types: treated as LLaVA-like (the largest group of released checkpoints), with a warning at load.
GENERIC = Family("unknown", "other", "")


def family_of(model_type: str) -> Family:
    """The family of a config's ``model_type``; an unknown type gets LLaVA-like defaults."""
    return FAMILIES.get(model_type, GENERIC)


def tailor_default_modules(model_type: str) -> tuple[str, ...]:
    """The tensor-name patterns Model Tailor and the merging baselines consider by default: the language model's
    blocks and the projector of ``model_type``'s family."""
    family = family_of(model_type)
    return family.language_blocks + family.projector
