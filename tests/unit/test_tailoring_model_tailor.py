"""Model Tailor end to end on a real tiny LLaVA (CLIP ViT + Llama) saved with save_pretrained."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unforget.errors import ConfigError, ModelLoadError, RegistryError  # noqa: E402
from unforget.tailoring import (  # noqa: E402
    TAILORING_METHODS,
    apply_patch,
    considered_keys,
    open_checkpoint,
    tailor,
    write_tailored,
)
from unforget.tailoring.checkpoints import SafetensorsCheckpoint  # noqa: E402

IMAGE_TOKEN_ID = 100


def tiny_llava(seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN_ID,
                         projector_hidden_act="gelu", vision_feature_layer=-1)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, IMAGE_TOKEN_ID, (2, 12), generator=g)
    ids[:, 1:5] = IMAGE_TOKEN_ID  # (16 / 8)^2 = 4 image tokens
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(2, 3, 16, 16, generator=g), "labels": ids.clone()}


def finetune(model, seeds, lr: float = 0.5):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for seed in seeds:
        model(**make_batch(seed)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tailor")
    model = tiny_llava()
    model.save_pretrained(root / "base")
    (root / "base" / "tokenizer_config.json").write_text("{}")  # stands for the tokenizer / processor files
    finetune(model, range(5)).save_pretrained(root / "ft")
    finetune(model, range(5, 8)).save_pretrained(root / "ft2")  # a second task, continuing from the first
    return root


@pytest.fixture(scope="module")
def calib():
    return [make_batch(100 + i) for i in range(3)]


@pytest.fixture(scope="module")
def tailored(folders, calib):
    return tailor(folders / "base", folders / "ft", calib, sparsity=0.1, device="cpu")


def read_all(folder) -> dict[str, torch.Tensor]:
    checkpoint = open_checkpoint(folder)
    return {k: checkpoint.get(k) for k in checkpoint.keys()}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_methods_are_registered():
    assert set(TAILORING_METHODS.names()) == {"model-tailor", "magnitude", "average", "task-arithmetic", "ties",
                                              "dare"}
    with pytest.raises(RegistryError, match="Did you mean 'model-tailor'"):
        TAILORING_METHODS.get("model_tailor")


def test_default_modules_are_language_model_blocks_and_projector(folders):
    keys = considered_keys(open_checkpoint(folders / "base"))
    assert keys and all(("language_model.model.layers." in k) or k.startswith("multi_modal_projector.") for k in keys)
    assert "multi_modal_projector.linear_1.weight" in keys
    assert not any(k.endswith("bias") or "norm" in k or "embed" in k or "lm_head" in k for k in keys)


def test_sparsity_zero_gives_the_base_bit_for_bit(folders):
    result = tailor(folders / "base", folders / "ft", None, sparsity=0.0)
    assert result.patch.size == 0
    base = read_all(folders / "base")
    tailored = result.state_dict()
    assert all(bitwise_equal(tailored[k], base[k]) for k in base)


def test_sparsity_one_without_compensation_gives_the_finetuned_model(folders, calib):
    result = tailor(folders / "base", folders / "ft", calib, sparsity=1.0, compensate=False)
    base, ft, out = read_all(folders / "base"), read_all(folders / "ft"), result.state_dict()
    considered = set(result.stats)
    for key in base:
        expected = ft[key] if key in considered else base[key]
        assert bitwise_equal(out[key], expected), key


def test_patch_changes_exactly_the_requested_fraction_of_considered_entries(folders, tailored):
    base = read_all(folders / "base")
    out = tailored.state_dict()
    considered = sum(base[k].numel() for k in tailored.stats)
    assert tailored.patch.size == round(0.1 * considered)
    changed = sum(int((out[k] != base[k]).sum()) for k in base)
    assert changed == tailored.patch.size  # every patched entry really moves
    assert set(tailored.patch.tensors) <= set(tailored.stats)
    untouched = [k for k in base if k not in tailored.stats]
    assert untouched and all(bitwise_equal(out[k], base[k]) for k in untouched)


def test_per_layer_keeps_the_fraction_in_every_tensor(folders, calib):
    result = tailor(folders / "base", folders / "ft", calib, sparsity=0.25, per_layer=True, compensate=False,
                    fusion=1.0)
    for stat in result.stats.values():
        assert stat.changed == round(0.25 * stat.numel)


def test_compensation_reduces_each_layers_output_error(folders, tailored):
    compensated = [s for s in tailored.stats.values() if s.error_after[0] is not None]
    # every considered tensor of this model is an nn.Linear weight that saw calibration inputs
    assert len(compensated) == len(tailored.stats)
    for stat in compensated:
        assert stat.error_after[0] < stat.error_before[0], stat.key
    ft = read_all(folders / "ft")
    out = tailored.state_dict()
    key = "language_model.model.layers.0.mlp.down_proj.weight"
    indices = tailored.patch.tensors[key].indices
    assert not torch.equal(out[key].reshape(-1)[indices], ft[key].reshape(-1)[indices])  # kept entries adjusted


def test_compensation_reduces_layer_output_error_on_calibration_activations(folders, tailored, calib):
    """||W_tailored X - W_ft X|| measured on the real inputs of one layer, not through the stored stats."""
    from transformers import LlavaForConditionalGeneration

    ft_model = LlavaForConditionalGeneration.from_pretrained(folders / "ft")
    inputs = []
    layer = ft_model.model.language_model.layers[1].mlp.down_proj
    handle = layer.register_forward_hook(lambda m, i, o: inputs.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        for batch in calib:
            ft_model(**batch)
    handle.remove()
    x = torch.cat(inputs)
    key = "language_model.model.layers.1.mlp.down_proj.weight"
    w_ft = layer.weight.detach()
    indices = tailored.patch.tensors[key].indices
    grafted = read_all(folders / "base")[key].clone()
    grafted.view(-1)[indices] = w_ft.reshape(-1)[indices]  # the same mask without compensation
    error_plain = torch.linalg.norm(x @ grafted.T - x @ w_ft.T)
    error_tailored = torch.linalg.norm(x @ tailored.tensor(key).T - x @ w_ft.T)
    assert error_tailored < 0.95 * error_plain


def test_patch_round_trip_equals_the_in_memory_result(folders, tailored, tmp_path):
    patch_path = write_tailored(tailored, tmp_path, format="patch")
    assert patch_path.name == "patch.safetensors"
    out = apply_patch(folders / "base", patch_path, tmp_path / "applied")
    expected = tailored.state_dict()
    applied = read_all(out)
    assert set(applied) == set(expected)
    assert all(bitwise_equal(applied[k], expected[k]) for k in expected)
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()


def test_hf_folder_output_loads_in_transformers_and_shards(folders, tailored, tmp_path):
    from transformers import LlavaForConditionalGeneration

    out = write_tailored(tailored, tmp_path / "model", max_shard_size="40KB")
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    assert isinstance(SafetensorsCheckpoint(out), SafetensorsCheckpoint)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    key = "multi_modal_projector.linear_1.weight"
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight.detach(), tailored.tensor(key))
    assert tailored.seconds.write > 0
    with pytest.raises(ConfigError, match="already holds weights"):
        write_tailored(tailored, out)


def test_patch_refuses_another_base(folders, tailored, tmp_path):
    other = tmp_path / "other-base"
    tiny_llava(seed=1).save_pretrained(other)
    with pytest.raises(ModelLoadError, match="another base model"):
        apply_patch(other, tailored.patch, tmp_path / "out")


def test_multi_task_overlap_rules(folders):
    from unforget.tailoring.scores import fused_score

    base, ft1, ft2 = read_all(folders / "base"), read_all(folders / "ft"), read_all(folders / "ft2")
    options = dict(sparsity=0.2, compensate=False, fusion=1.0)
    tasks = [folders / "ft", folders / "ft2"]
    by_score = tailor(folders / "base", tasks, None, overlap="score", **options)
    averaged = tailor(folders / "base", tasks, None, overlap="average", **options)
    # each task's mask is the one it gets alone
    masks = []
    for ft in tasks:
        alone = tailor(folders / "base", ft, None, **options)
        masks.append({k: set(p.indices.tolist()) for k, p in alone.patch.tensors.items()})
    total = sum(s.numel for s in by_score.stats.values())
    overlap = sum(s.overlap for s in by_score.stats.values())
    assert overlap > 0
    assert by_score.patch.size == 2 * round(0.2 * total) - overlap  # the union of both masks
    for key, patch in by_score.patch.tensors.items():
        b = base[key].reshape(-1)
        d1, d2 = ft1[key].reshape(-1) - b, ft2[key].reshape(-1) - b
        s1 = fused_score(ft1[key] - base[key], fusion=1.0).reshape(-1)
        s2 = fused_score(ft2[key] - base[key], fusion=1.0).reshape(-1)
        m1, m2 = masks[0].get(key, set()), masks[1].get(key, set())
        assert set(patch.indices.tolist()) == m1 | m2
        score_values = dict(zip(patch.indices.tolist(), patch.values.tolist()))
        avg_patch = averaged.patch.tensors[key]
        avg_values = dict(zip(avg_patch.indices.tolist(), avg_patch.values.tolist()))
        for i in m1 | m2:
            if i in m1 and i in m2:
                winner = ft1 if s1[i] >= s2[i] else ft2
                assert score_values[i] == winner[key].reshape(-1)[i].item()
                assert avg_values[i] == pytest.approx((b[i] + (d1[i] + d2[i]) / 2).item(), abs=1e-6)
            else:
                only = ft1 if i in m1 else ft2
                assert score_values[i] == only[key].reshape(-1)[i].item()
                assert avg_values[i] == pytest.approx(only[key].reshape(-1)[i].item(), abs=1e-6)


def test_model_tailor_needs_calibration_unless_salience_only(folders):
    with pytest.raises(ConfigError, match="calibration batches"):
        tailor(folders / "base", folders / "ft", None)
    result = tailor(folders / "base", folders / "ft", None, fusion=1.0, compensate=False, sparsity=0.05)
    assert result.patch.size == round(0.05 * result.considered)


def test_unknown_option_is_named(folders):
    with pytest.raises(ConfigError, match="Did you mean 'density'"):
        tailor(folders / "base", folders / "ft", None, method="ties", densty=0.3)
    with pytest.raises(ConfigError, match="no option 'fusion'"):
        tailor(folders / "base", folders / "ft", None, method="average", fusion=0.5)


def test_modules_filter_limits_what_changes(folders):
    result = tailor(folders / "base", folders / "ft", None, method="magnitude", sparsity=1.0,
                    modules=["multi_modal_projector"])
    assert set(result.patch.tensors) == {"multi_modal_projector.linear_1.weight",
                                         "multi_modal_projector.linear_2.weight"}
    with pytest.raises(ConfigError, match="no tensor"):
        tailor(folders / "base", folders / "ft", None, method="magnitude", modules=["no_such_module"])


def test_summary_is_json_ready(tailored):
    import json

    summary = json.loads(json.dumps(tailored.summary()))
    assert summary["method"] == "model-tailor"
    assert summary["changed_fraction"] == pytest.approx(0.1, abs=1e-4)
    assert set(summary["seconds"]) == {"calibrate", "score", "mask", "compensate", "merge", "write"}
    first = next(iter(summary["tensors"].values()))
    assert {"kept_fraction", "error_before", "error_after"} <= set(first)


def test_lora_finetune_is_tailored_with_calibration_at_the_merged_weights(folders, calib, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(folders / "base")
    torch.manual_seed(5)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                                  target_modules=["q_proj", "linear_1"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    result = tailor(folders / "base", tmp_path / "adapter", calib, sparsity=0.02)
    # only adapted tensors changed, so only they can be grafted
    assert result.patch.tensors and all(k.endswith(("q_proj.weight", "linear_1.weight")) for k in result.patch.tensors)
    assert result.patch.size == round(0.02 * result.considered)
    for key in result.patch.tensors:
        stat = result.stats[key]
        assert stat.error_after[0] <= stat.error_before[0]


def test_per_task_calibration_sets_and_compensation_for_each_task(folders, calib):
    tasks = [folders / "ft", folders / "ft2"]
    result = tailor(folders / "base", tasks, [calib[:2], calib[2:]], sparsity=0.1, fusion=1.0)
    for stat in result.stats.values():
        assert len(stat.error_after) == 2
        assert all(after < before for before, after in zip(stat.error_before, stat.error_after))
    with pytest.raises(ConfigError, match="per-task sets for 2"):
        tailor(folders / "base", tasks, [calib, calib, calib], sparsity=0.1, fusion=1.0)
