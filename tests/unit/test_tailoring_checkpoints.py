"""Reading base / fine-tuned weights: sharded folders, LoRA adapters, partial checkpoints, refusals."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unforget.errors import ModelLoadError  # noqa: E402
from unforget.tailoring import LoraCheckpoint, fingerprint, open_checkpoint, tailor  # noqa: E402
from unforget.tailoring.checkpoints import OverlayCheckpoint, SafetensorsCheckpoint, StateDictCheckpoint  # noqa: E402
from unforget.tailoring.keys import canonical_name, match_keys  # noqa: E402


def tiny_llava(seed: int = 0, text_hidden: int = 32):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=text_hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=100, projector_hidden_act="gelu")
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


PROJECTOR = "multi_modal_projector.linear_1.weight"


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "base"
    tiny_llava().save_pretrained(folder)
    return folder


def test_match_keys_across_naming_schemes():
    saved = ["language_model.model.layers.0.mlp.up_proj.weight", "language_model.lm_head.weight",
             "multi_modal_projector.linear_1.weight"]
    in_memory = ["model.language_model.layers.0.mlp.up_proj.weight", "lm_head.weight",
                 "model.multi_modal_projector.linear_1.weight"]
    assert match_keys(in_memory, saved) == dict(zip(in_memory, saved))
    assert canonical_name("base_model.model.model.language_model.layers.0.q_proj") == "language_model.layers.0.q_proj"
    with pytest.raises(ModelLoadError, match="'vision_tower.extra.weight' has no counterpart"):
        match_keys(["vision_tower.extra.weight"], saved)


def test_sharded_folder_reads_every_tensor(tmp_path):
    model = tiny_llava()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    checkpoint = open_checkpoint(tmp_path / "sharded")
    assert isinstance(checkpoint, SafetensorsCheckpoint)
    expected = model.state_dict()
    names = match_keys(checkpoint.keys(), expected.keys())
    assert len(names) == len(checkpoint.keys()) == len(expected)
    for key, name in names.items():
        assert torch.equal(checkpoint.get(key), expected[name])
        assert checkpoint.info(key).shape == tuple(expected[name].shape)


def test_pickle_is_refused_unless_allowed(tmp_path, base_folder):
    base = open_checkpoint(base_folder)
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({k: base.get(k) for k in base.keys()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle.*allow_pickle=True"):
        open_checkpoint(folder / "pytorch_model.bin", base=base)
    with pytest.raises(ModelLoadError, match="pickle"):
        open_checkpoint(folder, base=base)
    loaded = open_checkpoint(folder, base=base, allow_pickle=True)
    assert torch.equal(loaded.get("multi_modal_projector.linear_1.weight"),
                       base.get("multi_modal_projector.linear_1.weight"))


def test_other_architecture_is_refused_naming_the_tensor(tmp_path, base_folder):
    tiny_llava(text_hidden=48).save_pretrained(tmp_path / "wider")
    with pytest.raises(ModelLoadError, match=r"tensor '[\w.]+' has shape \[.*\] but the base has"):
        open_checkpoint(tmp_path / "wider", base=open_checkpoint(base_folder))
    save_file({"language_model.model.layers.9.mlp.up_proj.weight": torch.zeros(64, 32)}, tmp_path / "extra.safetensors")
    with pytest.raises(ModelLoadError, match="layers.9.mlp.up_proj.weight"):
        open_checkpoint(tmp_path / "extra.safetensors", base=open_checkpoint(base_folder))


def test_projector_only_checkpoint_completes_with_the_base(tmp_path, base_folder):
    base = open_checkpoint(base_folder)
    new_weight = torch.randn(base.info("multi_modal_projector.linear_1.weight").shape)
    # saved under the in-memory module name, as a trainer's state_dict() would
    save_file({"model.multi_modal_projector.linear_1.weight": new_weight}, tmp_path / "projector.safetensors")
    partial = open_checkpoint(tmp_path / "projector.safetensors", base=base)
    assert isinstance(partial, OverlayCheckpoint)
    assert partial.changed_keys() == ["multi_modal_projector.linear_1.weight"]
    assert torch.equal(partial.get("multi_modal_projector.linear_1.weight"), new_weight)
    other = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(partial.get(other), base.get(other))
    result = tailor(base_folder, tmp_path / "projector.safetensors", None, method="magnitude", sparsity=1.0)
    assert set(result.patch.tensors) == {"multi_modal_projector.linear_1.weight"}


def test_training_checkpoint_folder_ignores_optimizer_and_rng_files(tmp_path, base_folder):
    base = open_checkpoint(base_folder)
    folder = tmp_path / "epoch-1"
    folder.mkdir()
    weight = torch.randn(base.info(PROJECTOR).shape)
    save_file({"model." + PROJECTOR: weight}, folder / "projector.safetensors")
    save_file({"state.0.exp_avg": torch.zeros(3)}, folder / "optimizer.safetensors")
    save_file({"torch": torch.zeros(4, dtype=torch.uint8)}, folder / "rng_state_0.safetensors")
    checkpoint = open_checkpoint(folder, base=base)
    assert checkpoint.changed_keys() == [PROJECTOR] and torch.equal(checkpoint.get(PROJECTOR), weight)
    save_file({"model." + PROJECTOR: weight}, folder / "second.safetensors")
    with pytest.raises(ModelLoadError, match="several weight files"):
        open_checkpoint(folder, base=base)


def _peft_model(base_folder, **lora_options):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(base_folder)
    config = LoraConfig(init_lora_weights=False, **lora_options)  # non-zero B: a real delta
    torch.manual_seed(3)
    return get_peft_model(model, config)


@pytest.mark.parametrize(
    "options",
    [
        dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "linear_1", "embed_tokens"]),
        dict(r=2, lora_alpha=3, target_modules=["linear_1"], lora_bias=True),
        dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["up_proj", "o_proj"],
             alpha_pattern={"o_proj": 2}, modules_to_save=["linear_2"]),
    ],
    ids=["plain-with-embedding", "lora-bias", "rslora-alpha-pattern-modules-to-save"],
)
def test_lora_adapter_merge_equals_peft_merge_and_unload(tmp_path, base_folder, options):
    peft_model = _peft_model(base_folder, **options)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().state_dict()
    base = open_checkpoint(base_folder)
    lora = open_checkpoint(tmp_path / "adapter", base=base)
    assert isinstance(lora, LoraCheckpoint)
    names = match_keys(base.keys(), merged.keys())
    changed = set(lora.changed_keys())
    assert changed and all(k.endswith((".weight", ".bias")) for k in changed)
    for key, name in names.items():
        assert torch.equal(lora.get(key), merged[name]), key
        if key not in changed:
            assert torch.equal(lora.get(key), base.get(key))
    adapted = [k for k in changed if "linear_2" not in k]  # modules_to_save copies start equal to the base
    assert adapted and all(not torch.equal(lora.get(k), base.get(k)) for k in adapted)
    if "modules_to_save" in options:
        assert "multi_modal_projector.linear_2.weight" in changed


def test_lora_input_through_tailor_equals_peft_merge(tmp_path, base_folder):
    peft_model = _peft_model(base_folder, r=2, lora_alpha=4, target_modules=["gate_proj", "linear_2"])
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().state_dict()
    result = tailor(base_folder, tmp_path / "adapter", None, method="magnitude", sparsity=1.0)
    names = match_keys(result.stats, merged.keys())
    for key, name in names.items():
        assert torch.equal(result.tensor(key), merged[name]), key
    assert any("gate_proj" in k for k in result.patch.tensors)


def test_dora_adapter_is_refused(tmp_path, base_folder):
    peft_model = _peft_model(base_folder, r=2, target_modules=["q_proj"], use_dora=True)
    peft_model.save_pretrained(tmp_path / "dora")
    with pytest.raises(ModelLoadError, match="use_dora.*merge_and_unload"):
        open_checkpoint(tmp_path / "dora", base=open_checkpoint(base_folder))


def test_fingerprint_tells_bases_apart(tmp_path, base_folder):
    base = open_checkpoint(base_folder)
    tensors = {k: base.get(k).clone() for k in base.keys()}
    assert fingerprint(StateDictCheckpoint(tensors)) == fingerprint(base)
    tensors["multi_modal_projector.linear_1.weight"][0, 0] += 1.0
    assert fingerprint(StateDictCheckpoint(tensors)) != fingerprint(base)
