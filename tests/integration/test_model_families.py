"""Every supported HF multimodal family through unforget's single model path, on tiny random models built here.

build (tests/tiny_models.py) -> load_model -> build_prompt -> encode_batch -> generate, and
build_example -> collate_examples -> loss.backward(); plus load_model's refusals and options.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import FAMILIES, session_tiny_model
from unforget.errors import ModelLoadError
from unforget.models.loading import load_model
from unforget.models.prompting import build_prompt, encode_batch
from unforget.training.examples import IGNORE_INDEX, build_example, collate_examples

QUESTIONS = ["what colour is it?", "how many shapes are there in the picture?"]
ANSWERS = ["red", "two"]

# Where each family's released chat template puts the image, as build_prompt must render it.
PROMPT_OF_FIRST_QUESTION = {
    "llava": "USER: <image>\nwhat colour is it? ASSISTANT:",
    "llava_next": "[INST] <image>\nwhat colour is it? [/INST]",
    "qwen2_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>what colour is it?<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "<|begin_of_text|>User:<image>what colour is it?<end_of_utterance>\nAssistant:",
    "smolvlm": "<|im_start|>User:<image>what colour is it?<end_of_utterance>\nAssistant:",
    "instructblip": "what colour is it?",  # no chat template: the question is the prompt
    "gemma3": "<bos><start_of_turn>user\n<start_of_image>what colour is it?<end_of_turn>\n<start_of_turn>model\n",
}
PROMPT_OF_FIRST_QUESTION["qwen2_5_vl"] = PROMPT_OF_FIRST_QUESTION["qwen2_vl"]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    # a tall and a wide picture: different tile counts (LLaVA-NeXT, Idefics3) and patch grids (Qwen2-VL)
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((20, 28), (48, 12))]


@pytest.fixture(scope="module", params=FAMILIES)
def family_folder(request, tmp_path_factory):
    family = request.param
    return family, session_tiny_model(family, tmp_path_factory)


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    return session_tiny_model("llava", tmp_path_factory)


def _greedy(lm, enc, n: int) -> torch.Tensor:
    with torch.inference_mode():
        out = lm.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    # every family returns prompt + new tokens, so callers slice the prompt off
    assert out.shape[1] == enc["input_ids"].shape[1] + n
    return out[:, enc["input_ids"].shape[1]:]


def test_batched_generation_matches_one_by_one(family_folder, images):
    family, folder = family_folder
    lm = load_model(str(folder), device="cpu")
    assert lm.family == family
    prompts = [build_prompt(lm, q) for q in QUESTIONS]
    assert prompts[0] == PROMPT_OF_FIRST_QUESTION[family]

    enc = encode_batch(lm, images, prompts)
    mask = enc["attention_mask"]
    assert not mask.all(), "the two prompts should differ in length, so one is padded"
    assert mask[:, -1].all(), "left padding: the last position is a real token in every row"
    new = _greedy(lm, enc, 3)
    answers = lm.tokenizer.batch_decode(new, skip_special_tokens=True)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    # padding and mixed image sizes must not change what the model says
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        alone = _greedy(lm, encode_batch(lm, [image], [prompt]), 3)
        assert alone[0].tolist() == new[i].tolist()


def test_training_batch_backpropagates_into_the_vision_tower(family_folder, images):
    family, folder = family_folder
    lm = load_model(str(folder), device="cpu")
    examples = [build_example(lm, im, q, a) for im, q, a in zip(images, QUESTIONS, ANSWERS)]
    for ex, answer in zip(examples, ANSWERS):
        n_answer = len(lm.tokenizer(answer + lm.tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        assert (ex.labels != IGNORE_INDEX).sum() == n_answer
        assert ex.labels[-n_answer:].tolist() == ex.input_ids[-n_answer:].tolist()
    batch = collate_examples(examples, lm.tokenizer.pad_token_id)

    # the right-padded batch gives each sample the logits it gets alone
    with torch.no_grad():
        batched = lm.model(**batch).logits
        for i, ex in enumerate(examples):
            alone = lm.model(**collate_examples([ex], lm.tokenizer.pad_token_id)).logits[0]
            torch.testing.assert_close(batched[i, : len(ex.input_ids)], alone, atol=1e-4, rtol=1e-4)

    lm.model.train()
    loss = lm.model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in lm.model.named_parameters() if p.grad is not None}
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    vision = [n for n, g in grads.items() if ("vision" in n or "visual" in n) and g.abs().sum() > 0]
    assert vision, f"{family}: no gradient reached the vision tower, so the image did not enter the loss"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_hub_id_offline_tells_how_to_get_the_model(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as info:
        load_model("unforget-tests/no-such-model")
    message = str(info.value)
    assert "offline" in message
    assert "huggingface-cli download unforget-tests/no-such-model" in message
    assert "--model DIR" in message


def test_pickle_only_weights_are_refused(llava_folder, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(llava_folder, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_model(str(folder))


def test_unknown_dtype_is_refused(llava_folder):
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(str(llava_folder), dtype="float8")


def test_bfloat16_loads_bf16_weights_on_cpu(llava_folder, images):
    lm = load_model(str(llava_folder), dtype="bfloat16", device="cpu")
    dtypes = {p.dtype for p in lm.model.parameters() if p.is_floating_point()}
    assert dtypes == {torch.bfloat16}
    enc = encode_batch(lm, images[:1], [build_prompt(lm, QUESTIONS[0])])
    assert _greedy(lm, enc, 1).shape == (1, 1)


def test_attention_implementations_agree(llava_folder, images):
    logits = {}
    for impl in ("eager", "sdpa"):
        lm = load_model(str(llava_folder), device="cpu", attn_implementation=impl)
        assert lm.model.config._attn_implementation == impl
        assert lm.model.config.text_config._attn_implementation == impl
        enc = encode_batch(lm, images, [build_prompt(lm, q) for q in QUESTIONS])
        with torch.no_grad():
            # real tokens only: rows of left padding attend to nothing and differ between kernels
            logits[impl] = lm.model(**enc).logits[enc["attention_mask"].bool()]
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-4, rtol=1e-4)
