"""The CUDA-only model options: bf16, sdpa / flash-attention, device_map="auto", out-of-memory back-off, and the
planner's memory figures against what a 7B-shaped model really allocates."""

import pytest
import torch

from tests.finetune_helpers import build_tiny_llava

GIB = 1024**3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_llava(folder)
    return folder


def _answers(lm):
    from PIL import Image

    from unforget.evaluation.generation import GenerationRequest, generate_answers

    image = Image.new("RGB", (32, 32), (220, 30, 30))
    return generate_answers(lm, [GenerationRequest("What colour is the image?", image)] * 3, batch_size=3,
                            max_new_tokens=3)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bf16_on_cuda(tiny_dir, attn):
    from unforget.models.loading import load_model

    lm = load_model(str(tiny_dir), dtype="auto", device="cuda", attn_implementation=attn)
    assert lm.device.type == "cuda"
    assert next(lm.model.parameters()).dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    assert len(_answers(lm)) == 3


def test_flash_attention_2_when_installed(tiny_dir):
    pytest.importorskip("flash_attn")
    from unforget.models.loading import load_model

    lm = load_model(str(tiny_dir), dtype="bfloat16", device="cuda", attn_implementation="flash_attention_2")
    assert len(_answers(lm)) == 3


def test_device_map_auto(tiny_dir):
    from unforget.models.loading import load_model

    lm = load_model(str(tiny_dir), dtype="bfloat16", device_map="auto")
    assert {p.device.type for p in lm.model.parameters()} == {"cuda"}
    assert len(_answers(lm)) == 3


def test_out_of_memory_backs_off_on_a_real_gpu():
    from unforget.scale.batching import with_oom_backoff

    free, _ = torch.cuda.mem_get_info()
    per_item = free // 8  # 16 items cannot fit, 7 can

    def allocate(batch_size):
        x = torch.empty(batch_size * per_item, dtype=torch.uint8, device="cuda")
        del x
        return batch_size

    fitted = with_oom_backoff(allocate, 16)
    assert 1 <= fitted < 8


def test_planned_weights_and_generation_memory_of_llava_7b():
    """LLaVA-1.5-7B-shaped, random weights in bf16 (about 13.2 GiB): the plan's weight bytes are what CUDA
    allocates, and a generate batch's peak stays within the plan's KV cache + prefill estimate (+-25%)."""
    from transformers import AutoModelForImageTextToText

    from unforget.planning.meta import load_model_config
    from unforget.planning.study_plan import TextShape, generate_memory

    free, _ = torch.cuda.mem_get_info()
    if free < 24 * GIB:
        pytest.skip("needs 24 GiB free")
    config = load_model_config("llava-hf/llava-1.5-7b-hf")
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    weights = torch.cuda.memory_allocated() - before
    assert weights == pytest.approx(2 * 7_063_427_072, rel=0.001)
    batch, text, new = 8, 56, 16
    ids = torch.randint(3, 32000, (batch, 576 + text), device="cuda")
    ids[:, 1:577] = config.image_token_index
    pixels = torch.randn(batch, 3, 336, 336, device="cuda", dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False)
    extra = torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()
    plan = generate_memory(TextShape.from_config(config), weights, 576 + text, new, 2, batch)
    assert extra == pytest.approx(batch * plan.per_sample, rel=0.25)
