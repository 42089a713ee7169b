"""Tiny random models of every supported HF multimodal family, built from configs (no download).

Like mergekit's tests/common.py: real architectures at toy sizes instead of mocks. Each builder writes an ordinary
Hugging Face folder (safetensors weights + processor + chat template) that ``unforget.models.loading.load_model``
loads through its single AutoProcessor / AutoModelForImageTextToText path. The tokenizer is unforget's small BPE
(``train_tokenizer``) carrying the special tokens each family's processor looks for, and the chat template renders
the image placeholder where that family's released template puts it.

    folder = make_tiny_model("qwen2_vl", tmp_path / "qwen")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from unforget.models.loading import image_only_processor_class

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "instructblip", "gemma3")

_CORPUS = [
    "what colour is the shape in the image? answer with one word.",
    "red green blue yellow circle square triangle a the is of on",
    "USER: ASSISTANT: User: Assistant: [INST] [/INST] system user assistant",
    "how many objects are there? 0 1 2 3 4 5 6 7 8 9 yes no",
]
_VOCAB = 320

# Chat templates as the families' released checkpoints ship them (images rendered where the real one renders them).
LLAVA_15_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_NEXT_TEMPLATE = (  # llava-hf/llava-v1.6-mistral-7b-hf
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> ' }}{% endif %}{% endfor %}"
)
QWEN2_VL_TEMPLATE = (  # Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDEFICS_BODY = (
    "{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _IDEFICS_BODY  # HuggingFaceM4/Idefics3-8B-Llama3
SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS_BODY  # HuggingFaceTB/SmolVLM-256M-Instruct

# Idefics3/SmolVLM name the tiles of a split image <row_i_col_j>; their tokenizers hold these as added tokens.
_ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             max_position_embeddings=512, tie_word_embeddings=False)


_SESSION_FOLDERS: dict[str, Path] = {}


def session_tiny_model(family: str, tmp_path_factory: Any) -> Path:
    """``family``'s tiny model, built once per test session (in a pytest temporary folder) and shared by every module:
    tests must not change it (copy it first)."""
    if family not in _SESSION_FOLDERS:
        _SESSION_FOLDERS[family] = make_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}") / "model")
    return _SESSION_FOLDERS[family]


def make_tiny_model(family: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random ``family`` model with its processor into ``folder`` (save_pretrained); return the folder."""
    try:
        builder = _BUILDERS[family]
    except KeyError:
        raise ValueError(f"no tiny builder for family '{family}'; known: {', '.join(FAMILIES)}") from None
    folder = Path(folder)
    torch.manual_seed(seed)
    model, processor = builder()
    tok = processor.tokenizer
    # some processors add their special tokens on creation; the embedding table must still cover them
    assert len(tok) <= model.get_input_embeddings().num_embeddings, f"{family}: tokenizer outgrew the vocabulary"
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def family_tokenizer(*, bos: str, eos: str, pad: str, special: dict[str, str] | None = None,
                     extra: Sequence[str] = (), chat_template: str | None = None) -> Any:
    """unforget's BPE with the family's bos/eos/pad and special tokens (``special``: attribute name -> token, e.g.
    image_token, the way the family's tokenizer_config names them; ``extra``: more added special tokens)."""
    from transformers import PreTrainedTokenizerFast

    from unforget.models.tokenizer import train_tokenizer

    base = train_tokenizer(_CORPUS, vocab_size=_VOCAB)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>",
        extra_special_tokens=dict(special or {}),
    )
    missing = [t for t in [bos, eos, pad, *extra] if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
    tok.chat_template = chat_template
    return tok


def _image_processor(name: str, **kwargs: Any) -> Any:
    """The torchvision-backed image processor when torchvision is installed, else its PIL twin (same output)."""
    import transformers

    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, f"{name}Pil"):
        name = f"{name}Pil"
    return getattr(transformers, name)(**kwargs)


def _text_config(cls_name: str, vocab: int, tok: Any, **overrides: Any) -> Any:
    import transformers

    return getattr(transformers, cls_name)(
        **{**_TEXT, **overrides}, vocab_size=vocab, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def _clip_vision(image_size: int, patch_size: int) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            image_size=image_size, patch_size=patch_size, projection_dim=32)


def _build_llava() -> tuple[Any, Any]:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = family_tokenizer(bos="<s>", eos="</s>", pad="<pad>", special={"image_token": "<image>"},
                           chat_template=LLAVA_15_TEMPLATE)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=_clip_vision(16, 8), text_config=_text_config("LlamaConfig", len(tok), tok),
        image_token_id=image_token_id, vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    image_processor = _image_processor(
        "CLIPImageProcessor", size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_15_TEMPLATE)
    return LlavaForConditionalGeneration(config), processor


def _build_llava_next() -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

    tok = family_tokenizer(bos="<s>", eos="</s>", pad="<pad>", special={"image_token": "<image>"},
                           chat_template=LLAVA_NEXT_TEMPLATE)
    pinpoints = [[16, 32], [32, 16], [32, 32]]
    config = LlavaNextConfig(
        vision_config=_clip_vision(16, 8), text_config=_text_config("MistralConfig", len(tok), tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=4,
    )
    image_processor = _image_processor(
        "LlavaNextImageProcessor", size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_NEXT_TEMPLATE)
    return LlavaNextForConditionalGeneration(config), processor


_QWEN_SPECIAL = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}


_QWEN_PIXELS = dict(patch_size=4, merge_size=2, temporal_patch_size=2,
                    size={"shortest_edge": 8 * 8, "longest_edge": 32 * 32})


def _qwen_processor(cls: Any, tok: Any) -> Any:
    # patch 4, merge 2: images are resized to multiples of 8 px between 8x8 and 32x32 pixels; no video part (as
    # unforget loads these processors: their video processor needs torchvision)
    return image_only_processor_class(cls)(image_processor=_image_processor("Qwen2VLImageProcessor", **_QWEN_PIXELS),
                                           tokenizer=tok, chat_template=QWEN2_VL_TEMPLATE)


def _qwen_ids(tok: Any) -> dict[str, int]:
    return {"image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>")}


def _build_qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok = family_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<pad>", special=_QWEN_SPECIAL,
                           chat_template=QWEN2_VL_TEMPLATE)
    # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
    text = _text_config("Qwen2VLTextConfig", len(tok), tok,
                        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text.to_dict(), vision_config=vision, **_qwen_ids(tok))
    return Qwen2VLForConditionalGeneration(config), _qwen_processor(Qwen2VLProcessor, tok)


def _build_qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = family_tokenizer(bos="<|im_start|>", eos="<|im_end|>", pad="<pad>", special=_QWEN_SPECIAL,
                           chat_template=QWEN2_VL_TEMPLATE)
    text = _text_config("Qwen2_5_VLTextConfig", len(tok), tok,
                        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    # window 16 px = 2x2 merged patches; layer 0 windowed, layer 1 full attention, as in the released models
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text.to_dict(), vision_config=vision, **_qwen_ids(tok))
    return Qwen2_5_VLForConditionalGeneration(config), _qwen_processor(Qwen2_5_VLProcessor, tok)


def _idefics_parts(bos: str, pad: str, template: str, vision_cls: str, image_proc_cls: str) -> tuple[Any, Any, Any]:
    import transformers

    tok = family_tokenizer(
        bos=bos, eos="<end_of_utterance>", pad=pad,
        special={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
        extra=_ROW_COL_TOKENS, chat_template=template,
    )
    # 16 px tiles of 4 px patches, pixel shuffle 2 -> 4 image tokens per tile; images up to 32 px split in 2x2 tiles
    vision = getattr(transformers, vision_cls)(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=16, patch_size=4)
    image_processor = _image_processor(image_proc_cls, size={"longest_edge": 32}, max_image_size={"longest_edge": 16},
                                       do_image_splitting=True)
    return tok, vision, image_processor


def _build_idefics3() -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    tok, vision, image_processor = _idefics_parts("<|begin_of_text|>", "<pad>", IDEFICS3_TEMPLATE,
                                                  "Idefics3VisionConfig", "Idefics3ImageProcessor")
    config = Idefics3Config(vision_config=vision, text_config=_text_config("LlamaConfig", len(tok), tok),
                            image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_TEMPLATE)
    return Idefics3ForConditionalGeneration(config), processor


def _build_smolvlm() -> tuple[Any, Any]:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor

    tok, vision, image_processor = _idefics_parts("<|im_start|>", "<|im_end|>", SMOLVLM_TEMPLATE,
                                                  "SmolVLMVisionConfig", "SmolVLMImageProcessor")
    config = SmolVLMConfig(vision_config=vision, text_config=_text_config("LlamaConfig", len(tok), tok),
                           image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    processor = image_only_processor_class(SmolVLMProcessor)(image_processor=image_processor, tokenizer=tok,
                                                             image_seq_len=4, chat_template=SMOLVLM_TEMPLATE)
    return SmolVLMForConditionalGeneration(config), processor


def _build_instructblip() -> tuple[Any, Any]:
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    # Vicuna-based InstructBLIP: no chat template, the question is the prompt. Like the released tokenizers it
    # names no image_token: the processor then uses its own <image> AddedToken (already in unforget's vocabulary).
    tok = family_tokenizer(bos="<s>", eos="</s>", pad="<pad>")
    # the Q-Former reads the question too, with its own (BERT-style) tokenizer
    qformer_tok = family_tokenizer(bos="[CLS]", eos="[SEP]", pad="[PAD]")
    num_query_tokens = 4
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=16, patch_size=8),
        qformer_config=InstructBlipQFormerConfig(vocab_size=len(qformer_tok), hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                                                 cross_attention_frequency=1, pad_token_id=qformer_tok.pad_token_id),
        text_config=_text_config("LlamaConfig", len(tok), tok),
        num_query_tokens=num_query_tokens, image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    image_processor = _image_processor("BlipImageProcessor", size={"height": 16, "width": 16})
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qformer_tok,
                                      num_query_tokens=num_query_tokens)
    return InstructBlipForConditionalGeneration(config), processor


GEMMA3_TEMPLATE = (  # google/gemma-3-4b-it, without its system-prompt folding
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _build_gemma3() -> tuple[Any, Any]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig

    tok = family_tokenizer(bos="<bos>", eos="<end_of_turn>", pad="<pad>",
                           special={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                    "image_token": "<image_soft_token>"},
                           extra=["<start_of_turn>"], chat_template=GEMMA3_TEMPLATE)
    # 16 px images of 4 px patches (4x4) pooled to 2x2 = 4 image tokens
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=4)
    text = _text_config("Gemma3TextConfig", len(tok), tok, head_dim=16, sliding_window=64)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), tie_word_embeddings=False)
    image_processor = _image_processor("Gemma3ImageProcessor", size={"height": 16, "width": 16})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                chat_template=GEMMA3_TEMPLATE)
    model = Gemma3ForConditionalGeneration(config)
    # transformers initialises the projection to zeros (released weights replace it): a random one, as a trained
    # model's, so that the image reaches the language model and gradients reach the vision tower
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.2)
    return model, processor


_BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "gemma3": _build_gemma3,
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "idefics3": _build_idefics3,
    "smolvlm": _build_smolvlm,
    "instructblip": _build_instructblip,
}


# ------------------------------------------------------------------ smol-llava parts in miniature

SMOL_CORPUS = ["What is the capital of France? Paris.", "the digit 7", "a red circle", "Describe the image."] * 20


def stand_in_tokenizer():
    """A tiny byte-level BPE with ChatML specials and no image token (as SmolLM2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SMOL_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")


def stand_in_parts(tied: bool = True):
    from transformers import Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

    tokenizer = stand_in_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=tied, max_position_embeddings=256)).eval()
    vision = Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                      patch_size=14, image_size=56)).eval()
    return lm, tokenizer, vision
