"""What each fine-tuning method promises, on a tiny random LLaVA (peft's test_only_params_are_updated style):
frozen weights stay bit-identical, trainable ones move, the trainable count is the method's, loss falls."""

from collections import Counter

import numpy as np
import pytest
import torch

from unforget.errors import ConfigError, RegistryError
from unforget.models.config import ModelConfig
from unforget.models.build import LlavaShape
from unforget.models.loading import load_model
from unforget.training.checkpoints import (
    capture_rng,
    optimizer_files,
    optimizer_state_dict,
    restore_rng,
)
from unforget.training.config import FinetuneConfig, TrainDataConfig
from unforget.training.data import EpochShuffleSampler, training_items
from unforget.training.methods.base import METHODS, count_parameters, part_of
from unforget.training.trainer import finetune

SHAPE = LlavaShape()  # the sizes build_tiny_llava uses


pytestmark = pytest.mark.usefixtures("one_thread")



def fresh(model_dir):
    return load_model(str(model_dir), device="cpu")


def prepared(model_dir, method, **options):
    m = METHODS.get(method)
    model = m.prepare(fresh(model_dir).model, m.parse_options(options))
    return model


# -------------------------------------------------------------------------------------------- trainable counts
H, V, I, L = SHAPE.text_hidden, SHAPE.vision_hidden, SHAPE.text_intermediate, SHAPE.text_layers
PROJECTOR = V * H + H + H * H + H  # linear_1 (vision -> text) + linear_2 (text -> text), with biases
BLOCK = 4 * H * H + 3 * H * I + 2 * H  # q k v o, gate up down, two RMSNorm weights


def lora_count(r):
    # q, k, v, o: H -> H; gate, up: H -> I; down: I -> H; each adds r * (in + out)
    return L * r * (4 * (H + H) + 2 * (H + I) + (I + H))


def test_projector_trains_only_the_projector(model_dir):
    model = prepared(model_dir, "projector")
    assert count_parameters(model)[0] == PROJECTOR
    assert sum(p.numel() for p in model.model.multi_modal_projector.parameters()) == PROJECTOR


def test_lora_count_and_only_language_model_targets(model_dir):
    model = prepared(model_dir, "lora", r=4)
    assert count_parameters(model)[0] == lora_count(4)
    lora_modules = [n for n, _ in model.named_modules() if n.endswith("lora_A.default")]
    assert len(lora_modules) == 7 * L
    assert all("language_model" in n and "vision_tower" not in n for n in lora_modules)
    # CLIP's q/k/v projections carry the same names and must not get adapters
    assert not any("vision_tower" in n and "lora" in n for n, _ in model.named_parameters())


def test_lora_llava15_preset_trains_projector_with_rank_128(model_dir):
    m = METHODS.get("lora")
    opts = m.parse_options({"preset": "llava15"})
    assert (opts.r, opts.alpha, opts.freeze_multi_modal_projector) == (128, 256, False)
    assert m.parse_options({"preset": "llava15", "r": 16}).r == 16  # explicit options beat the preset
    model = m.prepare(fresh(model_dir).model, opts)
    assert count_parameters(model)[0] == lora_count(128) + PROJECTOR
    assert model.peft_config["default"].lora_alpha == 256


@pytest.mark.parametrize("options,expected", [
    ({}, "total - vision"),
    ({"freeze_vision_tower": False}, "total"),
    ({"freeze_language_model": True}, "projector"),
    ({"freeze_multi_modal_projector": True}, "total - vision - projector"),
])
def test_full_counts(model_dir, options, expected):
    model = prepared(model_dir, "full", **options)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    want = {"total - vision": total - vision, "total": total, "projector": PROJECTOR,
            "total - vision - projector": total - vision - PROJECTOR}[expected]
    assert count_parameters(model)[0] == want
    assert all(not p.requires_grad for p in model.model.vision_tower.parameters()) == (
        options.get("freeze_vision_tower", True))


@pytest.mark.parametrize("options,expected", [
    ({"trainable_layers": 1}, BLOCK),
    ({"trainable_layers": 2}, 2 * BLOCK),
    ({"trainable_layers": 1, "trainable_modules": ["mlp"]}, 3 * H * I),
    ({"trainable_layers": 0, "extra_modules": ["lm_head", "norm"]}, None),
    ({"trainable_layers": 1, "freeze_multi_modal_projector": False}, BLOCK + PROJECTOR),
])
def test_partial_counts(model_dir, options, expected):
    model = prepared(model_dir, "partial", **options)
    if expected is None:
        expected = model.lm_head.weight.numel() + H  # lm_head + the final norm, not the blocks' layernorms
    assert count_parameters(model)[0] == expected
    if options.get("trainable_layers") == 1 and "trainable_modules" not in options:
        last, first = model.model.language_model.layers[-1], model.model.language_model.layers[0]
        assert all(p.requires_grad for p in last.parameters())
        assert not any(p.requires_grad for p in first.parameters())


def test_partial_refuses_more_layers_than_the_model_has(model_dir):
    with pytest.raises(ConfigError, match="has 2 blocks"):
        prepared(model_dir, "partial", trainable_layers=3)


def test_nothing_trainable_is_refused(model_dir):
    with pytest.raises(ConfigError, match="trains no parameter"):
        prepared(model_dir, "full", freeze_multi_modal_projector=True, freeze_language_model=True)


def test_option_and_method_typos_suggest_names():
    with pytest.raises(ConfigError, match="alpha"):
        METHODS.get("lora").parse_options({"alpah": 4})
    with pytest.raises(ConfigError, match="llava15"):
        METHODS.get("lora").parse_options({"preset": "llava-15"})
    with pytest.raises(RegistryError, match="lora"):
        METHODS.get("lroa")


@pytest.mark.parametrize("name,part", [
    ("model.vision_tower.encoder.layers.0.self_attn.q_proj.weight", "vision"),
    ("model.multi_modal_projector.linear_1.weight", "projector"),
    ("model.language_model.layers.0.self_attn.q_proj.weight", "language"),
    ("lm_head.weight", "language"),
    ("base_model.model.model.language_model.layers.1.mlp.up_proj.lora_A.default.weight", "language"),
    ("model.visual.merger.mlp.0.weight", "projector"),  # Qwen2-VL: the projector sits inside `visual`
    ("model.visual.blocks.0.attn.qkv.weight", "vision"),
    ("model.connector.modality_projection.proj.weight", "projector"),  # Idefics3
    ("model.text_model.layers.0.self_attn.q_proj.weight", "language"),
])
def test_part_of_names(name, part):
    assert part_of(name) == part


# ------------------------------------------------------------------------------------ what training changes
def run_steps(model_dir, tmp_path, method, steps=3, lr=1e-2, **options):
    lm = fresh(model_dir)
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    cfg = FinetuneConfig(model=ModelConfig(name=str(model_dir), device="cpu"),
                         data=TrainDataConfig(datasets=["ft-colours"]), method=method, method_options=options,
                         lr=lr, max_steps=steps, batch_size=4, warmup_ratio=0.0, out=str(tmp_path / method))
    result = finetune(cfg, lm=lm)
    return before, result


def base_name(peft_name):
    """A peft-wrapped parameter name -> the base model's name (None for adapter weights)."""
    if "lora_" in peft_name or "modules_to_save" in peft_name:
        return None
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")


@pytest.mark.parametrize("method,options", [
    ("projector", {}),
    ("lora", {"r": 4}),
    ("lora", {"r": 4, "freeze_multi_modal_projector": False}),
    ("full", {}),
    ("partial", {"trainable_layers": 1}),
])
def test_frozen_weights_stay_bit_identical_and_trainable_ones_move(model_dir, tmp_path, method, options):
    before, result = run_steps(model_dir, tmp_path, method, **options)
    model = result.lm.model
    moved = unchanged = 0
    for name, p in model.named_parameters():
        original = base_name(name)
        if p.requires_grad:
            reference = before.get(original) if original else None
            if reference is None:  # an adapter weight, absent from the base; lora_B starts at zero
                assert torch.isfinite(p).all()
                if "lora_B" in name:
                    assert p.abs().sum() > 0, f"{name} trains but did not change"
            else:
                assert not torch.equal(p.detach(), reference), f"{name} trains but did not change"
            moved += 1
        else:
            assert torch.equal(p.detach(), before[original]), f"{name} is frozen but changed"
            unchanged += 1
    assert moved > 0 and unchanged > 0
    if method == "lora" and not options.get("freeze_multi_modal_projector", True):
        copy = model.base_model.model.model.multi_modal_projector.modules_to_save["default"].linear_1.weight
        assert not torch.equal(copy.detach(), before["model.multi_modal_projector.linear_1.weight"])


@pytest.mark.parametrize("method,lr,epochs", [("lora", 1e-2, 12), ("full", 2e-2, 12)])
def test_loss_falls_when_overfitting_a_tiny_set(model_dir, tmp_path, method, lr, epochs):
    lm = fresh(model_dir)
    if method == "lora":
        # a random LM's output layer (std 0.02) behind a frozen RMSNorm cannot give any token a high probability;
        # LoRA leaves both frozen, so give the output layer a usable scale
        with torch.no_grad():
            lm.model.lm_head.weight.mul_(25)
    cfg = FinetuneConfig(model=ModelConfig(name=str(model_dir), device="cpu"),
                         data=TrainDataConfig(datasets=["ft-colours"], limit=3), method=method,
                         method_options={"dropout": 0.0} if method == "lora" else {}, lr=lr, epochs=epochs,
                         batch_size=3, warmup_ratio=0.0, out=str(tmp_path / "overfit"))
    result = finetune(cfg, lm=lm)
    assert len(result.losses) == epochs
    assert result.losses[-1] < 0.2 * result.losses[0], result.losses  # lora ends near 0, full near 0.8 of 5.8


def checkpointing_on(model):
    # transformers 5 renamed the property; older releases only have is_gradient_checkpointing
    if hasattr(type(model), "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return model.is_gradient_checkpointing


def test_gradient_checkpointing_computes_the_same_steps(model_dir, tmp_path):
    runs = []
    for checkpointing in (False, True):
        cfg = FinetuneConfig(model=ModelConfig(name=str(model_dir), device="cpu"),
                             data=TrainDataConfig(datasets=["ft-colours"]), method="full", lr=1e-3, max_steps=2,
                             batch_size=4, gradient_checkpointing=checkpointing, out=str(tmp_path / str(checkpointing)))
        runs.append(finetune(cfg, lm=fresh(model_dir)))
    plain, recomputed = runs
    assert checkpointing_on(recomputed.lm.model) and not checkpointing_on(plain.lm.model)
    assert plain.losses == pytest.approx(recomputed.losses, rel=1e-6)
    for (name, a), (_, b) in zip(plain.lm.model.named_parameters(), recomputed.lm.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_gradient_accumulation_matches_the_larger_batch(model_dir, tmp_path):
    # class 0 only: 4 samples with the same answer, so every micro-batch has as many answer tokens and the mean
    # of the micro-batch means is the batch mean. 4 micro-batches of 1 accumulated == one batch of 4
    runs = []
    for batch_size, grad_accum in ((4, 1), (1, 4)):
        cfg = FinetuneConfig(model=ModelConfig(name=str(model_dir), device="cpu"),
                             data=TrainDataConfig(datasets=["ft-colours"], classes=[0]), method="full", lr=1e-3,
                             epochs=2, batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=0.0,
                             out=str(tmp_path / f"accum{grad_accum}"))
        runs.append(finetune(cfg, lm=fresh(model_dir)))
    big, accumulated = runs
    assert big.global_step == accumulated.global_step == 2
    assert big.losses == pytest.approx(accumulated.losses, rel=1e-5)
    assert big.losses[1] < big.losses[0]
    for (name, a), (_, b) in zip(big.lm.model.named_parameters(), accumulated.lm.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


# --------------------------------------------------------------------------------------------- data, state
def test_training_items_classes_limit_and_round_robin():
    items, _ = training_items(TrainDataConfig(datasets=["ft-colours"], classes=[0, 2], limit=5,
                                              template="round-robin", sampling="head"))
    assert [it.sample.label for it in items] == [0, 2, 0, 2, 0]
    drawn, _ = training_items(TrainDataConfig(datasets=["ft-colours"], classes=[0, 2], limit=5))  # stratified
    assert len(drawn) == 5 and sorted(Counter(it.sample.label for it in drawn).values()) == [2, 3]
    assert [it.answer for it in items] == ["red", "blue", "red", "blue", "red"]
    assert items[0].question.startswith("What colour") and items[1].question.startswith("Which colour")
    assert "red, green, blue" in items[0].question
    fixed, _ = training_items(TrainDataConfig(datasets=["ft-colours"], template=1, limit=2))
    assert all(it.question.startswith("Which colour") for it in fixed)
    vqa, _ = training_items(TrainDataConfig(datasets=["ft-colours-vqa"]))
    assert [(it.question, it.answer) for it in vqa[:2]] == [("Is the image red?", "yes"), ("Is the image red?", "no")]
    with pytest.raises(ConfigError, match="outside"):
        training_items(TrainDataConfig(datasets=["ft-colours"], classes=[3]))
    with pytest.raises(ConfigError, match="no classes"):
        training_items(TrainDataConfig(datasets=["ft-colours-vqa"], classes=[0]))


def test_epoch_order_depends_on_seed_and_epoch_only():
    a, b = EpochShuffleSampler(20, seed=3), EpochShuffleSampler(20, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(123)  # the global generator plays no part
    assert list(b) == first and sorted(first) == list(range(20))
    a.set_epoch(1)
    assert list(a) != first
    assert list(EpochShuffleSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]


def test_optimizer_state_round_trips_through_safetensors_and_json():
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:]}], lr=1e-3)
    for _ in range(2):
        sum((p ** 2).sum() for p in params).backward()
        opt.step()
    sd = opt.state_dict()
    tensors, meta = optimizer_files(sd)
    import json

    back = optimizer_state_dict(tensors, json.loads(json.dumps(meta)))
    assert back["param_groups"] == sd["param_groups"]
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    for idx, entry in sd["state"].items():
        assert set(back["state"][idx]) == set(entry)
        for key, value in entry.items():
            assert torch.equal(back["state"][idx][key], value)


def test_rng_capture_restores_every_generator():
    import random

    tensors, meta = capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(tensors, meta)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
