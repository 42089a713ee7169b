"""Assemble a LLaVA-1.5-style ``LlavaForConditionalGeneration`` from a pre-trained language model and vision tower.

The assembly is what llava-hf's conversion does: the image placeholder ``<image>`` is added to the tokenizer and the
embedding table grows by one row (so the image token id lies inside it), the vision tower's config becomes
``vision_config``, a 2-layer GELU MLP projector maps vision features to the LM's width, and the processor
(image processor + tokenizer + a chat template that places the image) is saved beside the weights. The folder is then
loaded by ``load_model`` exactly as a llava-hf checkpoint is.

Used by ``smol-llava`` (SmolLM2-135M-Instruct + DINOv2-small) and, in tests, on tiny stand-in parts built from
configs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ...errors import ModelLoadError
from ...runs import atomic_write_json
from ..build import _clip_image_processor_class
from ..tokenizer import IMAGE_TOKEN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"

# SmolLM2's own chat template (ChatML with its default system prompt) that also renders list contents, the image
# as LLaVA's placeholder line: text-only chats render exactly as SmolLM2 was tuned on.
SMOL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class AssemblySpec:
    """How the parts are put together: image size (a multiple of the patch size), which vision layer feeds the
    projector, the image normalisation and the chat template."""

    image_size: int = 112
    vision_feature_layer: int = -1
    projector_hidden_act: str = "gelu"
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD
    chat_template: str = SMOL_CHAT_TEMPLATE
    extra: dict[str, Any] = field(default_factory=dict)

    def image_tokens(self, patch_size: int) -> int:
        return (self.image_size // patch_size) ** 2


def add_image_token(language_model: Any, tokenizer: Any) -> int:
    """Add ``<image>`` to the tokenizer (a special token) and grow the embedding table to hold it; the new rows are
    the mean of the existing ones (deterministic, unlike resize_token_embeddings' sampled init). Returns its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    embeddings = language_model.get_input_embeddings()
    old = embeddings.weight.shape[0]
    if image_token_id >= old:
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            embeddings = language_model.get_input_embeddings()
            embeddings.weight[old:] = embeddings.weight[:old].mean(0)
            out = language_model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != embeddings.weight.data_ptr():
                out.weight[old:] = out.weight[:old].mean(0)
    return image_token_id


def llava_config_from_parts(language_config: Any, vision_config: Any, image_token_id: int, spec: AssemblySpec) -> Any:
    from transformers import LlavaConfig  # start-up time: listing the zoo imports this module, assembling is rarer

    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=language_config.to_dict(),
        image_token_id=image_token_id,
        projector_hidden_act=spec.projector_hidden_act,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy="default",
        image_seq_length=spec.image_tokens(vision_config.patch_size),
        tie_word_embeddings=bool(getattr(language_config, "tie_word_embeddings", False)),
    )
    return config


def image_processor_for(spec: AssemblySpec) -> Any:
    return _clip_image_processor_class()(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        do_center_crop=True,
        do_convert_rgb=True,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
    )


def assemble_llava(language_model: Any, tokenizer: Any, vision_model: Any, spec: AssemblySpec | None = None,
                   *, seed: int = 0) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor) from a causal LM, its tokenizer and a vision model; the
    projector is randomly initialised from ``seed``. The parts' weights are copied in unchanged (the LM's embedding
    table gains the image token's row)."""
    # start-up time: listing the zoo imports this module, assembling is rarer
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    spec = spec or AssemblySpec()
    patch = vision_model.config.patch_size
    if spec.image_size % patch:
        raise ModelLoadError(f"image_size {spec.image_size} is not a multiple of the vision patch size {patch}")
    image_token_id = add_image_token(language_model, tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = llava_config_from_parts(language_model.config, vision_model.config, image_token_id, spec)
    torch.manual_seed(seed)
    llava = LlavaForConditionalGeneration(config)
    inner = llava.model
    _load_exact(inner.vision_tower, vision_model.state_dict(), "vision tower")
    base = language_model.get_decoder() if hasattr(language_model, "get_decoder") else language_model.model
    _load_exact(inner.language_model, base.state_dict(), "language model")
    with torch.no_grad():
        llava.lm_head.weight.copy_(language_model.get_output_embeddings().weight)
    llava.eval()
    llava.generation_config.eos_token_id = tokenizer.eos_token_id
    llava.generation_config.pad_token_id = tokenizer.pad_token_id
    llava.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = LlavaProcessor(
        image_processor=image_processor_for(spec),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=spec.chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
    )
    return llava, processor


def _load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("mask_token")]
    if missing or unexpected:
        raise ModelLoadError(f"assembling LLaVA: the {what} weights do not fit (missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]})")


def projector_state(llava: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in llava.model.multi_modal_projector.state_dict().items()}


def save_trained_parts(folder: str | Path, llava: Any, adapter_model: Any | None = None) -> None:
    """Write what training changed: the projector (safetensors) and, when a LoRA was trained, its peft adapter."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(projector_state(llava), str(folder / PROJECTOR_FILE))
    if adapter_model is not None:
        adapter_model.save_pretrained(str(folder / ADAPTER_DIR), safe_serialization=True)


def apply_trained_parts(llava: Any, folder: str | Path) -> Any:
    """Load the projector saved by :func:`save_trained_parts` and merge its LoRA adapter (if any) into the language
    model; returns the plain LlavaForConditionalGeneration."""
    folder = Path(folder)
    projector = folder / PROJECTOR_FILE
    if projector.is_file():
        _load_exact(llava.model.multi_modal_projector, load_file(str(projector)), "projector")
    adapter = folder / ADAPTER_DIR
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel  # start-up time: peft takes seconds to import, only to apply an adapter

        llava = PeftModel.from_pretrained(llava, str(adapter)).merge_and_unload()
    return llava.eval()


def save_folder(out: str | Path, llava: Any, processor: Any, provenance: dict[str, Any]) -> Path:
    """The Hugging Face folder (safetensors weights, processor, chat template) plus ``assembly.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    llava.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    atomic_write_json(out / "assembly.json", provenance)
    return out


def spec_dict(spec: AssemblySpec) -> dict[str, Any]:
    out = asdict(spec)
    out.pop("chat_template")
    return out


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    """SHA-256 of a file (the parts' provenance in assembly.json)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:limit] if limit else digest.hexdigest()
