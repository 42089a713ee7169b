"""The planner against figures counted by hand from the real 7B configs (not against itself).

Models are built on the meta device from the shipped copies of the hub's config.json; nothing is downloaded."""

import json
import math

import pytest
import torch
import yaml

from unforget.planning.meta import meta_model, repeated_block_classes
from unforget.planning.study_plan import (
    GIB,
    TextShape,
    count_parts,
    largest_batch,
    parameter_bytes,
    plan_method,
    plan_study,
    study_arms,
)

# ---- LLaVA-1.5-7B by hand: CLIP ViT-L/14 at 336 px, 2-layer MLP projector, Vicuna-7B (Llama, vocab 32064)
CLIP_EMBED = 3 * 14 * 14 * 1024 + 1024 + (24 * 24 + 1) * 1024 + 2 * 1024  # patch conv, CLS, positions, pre-LN
CLIP_LAYER = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 2 * 2 * 1024
CLIP = CLIP_EMBED + 24 * CLIP_LAYER + 2 * 1024  # + post-LN
PROJECTOR = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
LLAMA_LAYER = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
LLAMA = 32064 * 4096 + 32 * LLAMA_LAYER + 4096 + 32064 * 4096  # embeddings, layers, final norm, lm_head
LORA_R128_LAYER = 128 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))

# ---- Qwen2-VL-7B by hand: 32-block ViT (1280 wide) with a 2x2 patch merger, Qwen2-7B (GQA 28/4 heads)
QV_BLOCK = 2 * 2 * 1280 + (1280 * 3840 + 3840) + (1280 * 1280 + 1280) + (1280 * 5120 + 5120) + (5120 * 1280 + 1280)
QV_VISION = 3 * 2 * 14 * 14 * 1280 + 32 * QV_BLOCK  # 3-d patch conv (2 frames), no bias
QV_MERGER = 2 * 1280 + (5120 * 5120 + 5120) + (5120 * 3584 + 3584)
QV_KV = 4 * 128
QV_LAYER = ((3584 * 3584 + 3584) + 2 * (3584 * QV_KV + QV_KV) + 3584 * 3584 + 3 * 3584 * 18944 + 2 * 3584)
QV_TEXT = 152064 * 3584 + 28 * QV_LAYER + 3584 + 152064 * 3584


@pytest.fixture(scope="module")
def llava():
    return meta_model("llava-hf/llava-1.5-7b-hf")


@pytest.fixture(scope="module")
def qwen():
    return meta_model("Qwen/Qwen2-VL-7B-Instruct")


@pytest.fixture(scope="module")
def emt_plan():
    from unforget.config import find_config

    return plan_study(yaml.safe_load(find_config("emt/llava15-7b").read_text()), processes=4,
                      device_memory=80 * GIB)


def test_llava15_7b_parameters_by_part(llava):
    parts = count_parts(llava)
    assert (parts.vision, parts.projector, parts.language) == (CLIP, PROJECTOR, LLAMA)
    assert parts.total == 7_063_427_072  # "7B": 6.74B language model, 303.5M CLIP, 21.0M projector
    assert parameter_bytes(llava) == 2 * parts.total  # bfloat16
    assert all(p.device.type == "meta" for p in llava.parameters())


def test_qwen2_vl_7b_parameters_by_part(qwen):
    parts = count_parts(qwen)
    assert parts.vision == QV_VISION
    assert parts.projector == QV_MERGER
    assert parts.language == QV_TEXT
    assert parts.total == 8_291_375_616  # Qwen2-VL "7B" is 8.29B with its vision tower


def test_fsdp_wraps_the_transformer_blocks(llava, qwen):
    assert repeated_block_classes(llava) == ["CLIPEncoderLayer", "LlamaDecoderLayer"]
    assert repeated_block_classes(qwen) == ["Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"]


@pytest.mark.parametrize("file, model", [("fsdp-llava.yaml", "llava"), ("fsdp-qwen2-vl.yaml", "qwen")])
def test_shipped_fsdp_configs_wrap_what_the_planner_finds(file, model, request):
    from accelerate.utils import FullyShardedDataParallelPlugin

    from unforget.config import find_config

    cfg = yaml.safe_load(find_config(f"accelerate/{file.removesuffix('.yaml')}").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD"
    names = cfg["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(",")
    m = request.getfixturevalue(model)
    assert sorted(names) == repeated_block_classes(m)
    # accelerate's own policy built from those names wraps every block (32 + 24 for LLaVA, 28 + 32 for Qwen2-VL)
    plugin = FullyShardedDataParallelPlugin(auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=names)
    plugin.set_auto_wrap_policy(m)
    policy = plugin.auto_wrap_policy
    wrapped = sum(policy(module=mod, recurse=False, nonwrapped_numel=0) for mod in m.modules())
    assert wrapped == {"llava": 32 + 24, "qwen": 28 + 32}[model]


def test_lora_llava15_preset_targets_every_language_linear_layer(emt_plan):
    lora = next(m for m in emt_plan.methods if m.method == "lora")
    assert lora.lora_modules == 32 * 7  # q k v o gate up down in each of the 32 decoder layers, none in CLIP
    assert lora.trainable == 32 * LORA_R128_LAYER + PROJECTOR  # adapters + the projector (preset llava15)
    # peft keeps the adapters in float32 over the bfloat16 base; the projector's trained copy stays bfloat16
    assert lora.trainable_bytes == 4 * 32 * LORA_R128_LAYER + 2 * PROJECTOR


def test_memory_per_gpu_by_hand(emt_plan):
    total = CLIP + PROJECTOR + LLAMA
    assert emt_plan.weight_bytes == 2 * total
    proj = next(m for m in emt_plan.methods if m.method == "projector")
    assert proj.trainable == PROJECTOR
    # DDP: weights replicated; gradients, two AdamW moments and DDP's bucket copy of the 21M bf16 projector
    assert (proj.ddp.weights, proj.ddp.gradients, proj.ddp.optimizer, proj.ddp.comm_buffers) == (
        2 * total, 2 * PROJECTOR, 4 * PROJECTOR, 2 * PROJECTOR)
    # FSDP over 4 processes: a quarter of each
    assert proj.fsdp.weights == math.ceil(2 * total / 4)
    assert proj.fsdp.optimizer == math.ceil(4 * PROJECTOR / 4)
    lora = next(m for m in emt_plan.methods if m.method == "lora")
    lora_bytes = 4 * 32 * LORA_R128_LAYER + 2 * PROJECTOR
    assert lora.ddp.weights == 2 * total + lora_bytes  # the base, the adapters and the projector's trained copy
    assert lora.ddp.fixed == 2 * total + 5 * lora_bytes
    # activations with gradient checkpointing, 576 image + 64 text tokens: each layer's input kept, one layer
    # recomputed (6h + 2kv + 4i per token), bf16; plus 8 answer positions' float32 logits and their gradient
    s = 576 + 64
    act = 2 * (32 * 4096 * s + (6 * 4096 + 2 * 4096 + 4 * 11008) * s) + 2 * 8 * 32064 * 4
    assert proj.ddp.activations_per_sample == act
    assert proj.ddp.total == proj.ddp.fixed + 16 * act  # train.batch_size 16
    assert 0.24 < act / GIB < 0.26  # a quarter of a GiB per sample


def test_generation_memory_and_batch_by_hand(emt_plan):
    g = emt_plan.generate
    prompt = 576 + 64 - 8
    kv = 2 * 32 * 32 * 128 * (prompt + 16) * 2  # K and V, 32 layers x 32 heads x 128, prompt + 16 new, bf16
    assert g.kv_cache_per_sample == kv
    assert g.prefill_per_sample == prompt * (4096 + 2 * 11008) * 2
    per = kv + prompt * (4096 + 2 * 11008) * 2
    assert emt_plan.auto_batch_generate == (int(80 * GIB * 0.9) - g.weights) // per == 169


def test_flops_by_hand(emt_plan):
    # the generate count of one 632-token prompt + 15 decode steps, from matrix shapes (2 FLOPs per MAC)
    lin = 4 * 4096 * 4096 + 3 * 4096 * 11008
    prompt = 632
    clip = 2 * 576 * 3 * 14 * 14 * 1024 + 24 * 2 * (577 * (4 * 1024**2 + 2 * 1024 * 4096) + 2 * 577 * 577 * 1024)
    proj = 2 * 576 * (1024 * 4096 + 4096 * 4096)
    prefill = 2 * prompt * 32 * lin + 4 * 32 * 4096 * prompt * prompt + 2 * 4096 * 32064
    decode = sum(2 * 32 * lin + 4 * 32 * 4096 * (prompt + k) + 2 * 4096 * 32064 for k in range(1, 16))
    assert emt_plan.generate_flops_per_sample == clip + proj + prefill + decode
    assert emt_plan.eval_samples_per_pass == 4 * 1000


def test_largest_batch_backs_off_to_zero_when_weights_do_not_fit():
    assert largest_batch(fixed=10, per_sample=3, device_memory=100, headroom=0.1) == 26  # (90 - 10) // 3
    assert largest_batch(fixed=95, per_sample=3, device_memory=100, headroom=0.1) == 0
    # full fine-tuning of LLaVA-7B in bf16 with AdamW does not fit one 40 GiB GPU under DDP, fits under FSDP x 4
    from unforget.planning.meta import load_model_config

    cfg = load_model_config("llava-hf/llava-1.5-7b-hf")
    full = plan_method(cfg, "full", "full", {}, dtype=torch.bfloat16, tokens=640, answer_tokens=8, batch_size=4,
                       processes=4, device_memory=40 * GIB, checkpointing=True)
    assert full.trainable == LLAMA + PROJECTOR  # vision tower frozen by default
    assert full.ddp.fixed == 2 * (CLIP + PROJECTOR + LLAMA) + 4 * 2 * (LLAMA + PROJECTOR)
    assert full.auto_batch_ddp == 0 and full.auto_batch_fsdp > 0


def test_qwen2_vl_shape_and_kv_cache(qwen):
    from unforget.planning.meta import load_model_config

    shape = TextShape.from_config(load_model_config("Qwen/Qwen2-VL-7B-Instruct"))
    assert (shape.hidden, shape.layers, shape.kv_heads, shape.head_dim) == (3584, 28, 4, 128)
    assert shape.kv_per_token() == 2 * 28 * 4 * 128  # grouped-query attention: 7x smaller than 28 KV heads


def test_study_arms_of_every_study_kind():
    two = {"sweep": {"methods": [{"name": "p", "method": "projector"}, {"name": "l8", "method": "lora",
                                                                        "options": {"r": 8}}]},
           "hybrid": {"method": {"name": "l8", "method": "lora"}}}
    assert [a.name for a in study_arms(two)] == ["p", "l8"]
    tailor = {"methods": [{"name": "ties", "method": "ties"}], "train": {"method": "lora",
                                                                          "method_options": {"preset": "llava15"}}}
    arms = study_arms(tailor)
    assert [(a.name, a.options) for a in arms] == [("lora", {"preset": "llava15"})]


def test_plan_cli_writes_json(tmp_path, capsys):
    from unforget.cli import main

    study = {"model": {"name": "llava-hf/llava-1.5-7b-hf", "dtype": "bfloat16"},
             "train": {"batch_size": 8, "limit": 1000, "epochs": 1, "gradient_checkpointing": True},
             "methods": [{"name": "projector", "method": "projector"}],
             "eval": {"datasets": ["a", "b"], "limit": 100, "batch_size": 16, "max_new_tokens": 16}}
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study))
    out = tmp_path / "plan.json"
    assert main(["plan", "-c", str(cfg), "-n", "2", "--gpu-memory", "80", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["parameters"]["total"] == CLIP + PROJECTOR + LLAMA
    assert doc["methods"][0]["ddp"]["weights"] == 2 * (CLIP + PROJECTOR + LLAMA)
    assert doc["eval_samples_per_pass"] == 200
    assert doc["time"]["passes"] == 2
    printed = capsys.readouterr().out
    assert "7,063,427,072" in printed and "LlamaDecoderLayer" in printed
