import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from unforget.errors import ConfigError
from unforget.flops import FlopCount, forward_flops, generate_flops, image_tokens, train_step_flops
from unforget.models.build import LlavaShape, build_llava
from unforget.models.tokenizer import train_tokenizer


def hand_config() -> LlavaConfig:
    """Small enough to count by hand: 8 px images of 4 px patches, 1-layer tower and LM, GQA (2 heads, 1 kv)."""
    vision = CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4)
    text = LlamaConfig(hidden_size=8, intermediate_size=12, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=20)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=19, vision_feature_layer=-1)


# Hand counts, in multiply-accumulates (x2 = FLOPs):
# vision: 4 patches x 48 pixels x 8 = 1536 (patch conv); 5 tokens (CLS + 4) x (4*8*8 + 2*8*16) = 2560;
#         attention 2 products x 5 x 5 x 8 = 400                                   -> 4496 MACs
# projector: 4 image tokens (CLS dropped) x (8*8 + 8*8) = 512
# text per token: q 8*8 + o 8*8 + k 8*4 + v 8*4 = 192, MLP 3*8*12 = 288              -> 480
# text attention per token: 2 products x 2 heads x 4 dims x keys
# lm head per logits position: 8 x 20 = 160
def test_forward_matches_hand_count():
    cfg = hand_config()
    assert image_tokens(cfg) == 4
    f = forward_flops(cfg, n_tokens=6, n_images=1)
    assert f == FlopCount(vision=2 * 4496, projector=2 * 512, text_linear=2 * 6 * 480,
                          text_attention=2 * 2 * 2 * 4 * 6 * 6, lm_head=2 * 6 * 160)
    assert f.total == 8992 + 1024 + 5760 + 1152 + 1920


def test_decode_step_attends_to_the_context():
    step = forward_flops(hand_config(), n_tokens=1, context=10, logits_tokens=1)
    assert step == FlopCount(text_linear=2 * 480, text_attention=2 * 2 * 2 * 4 * 11, lm_head=2 * 160)


def test_generate_is_prefill_then_one_token_steps():
    cfg = hand_config()
    gen = generate_flops(cfg, prompt_tokens=6, new_tokens=3, n_images=1)
    expected = (forward_flops(cfg, 6, 1, logits_tokens=1) + forward_flops(cfg, 1, 0, 6, logits_tokens=1)
                + forward_flops(cfg, 1, 0, 7, logits_tokens=1))
    assert gen == expected
    assert gen.lm_head == 3 * 2 * 160  # one logits row per generated token


def test_train_step_convention():
    cfg = hand_config()
    fwd = forward_flops(cfg, 6, 1)
    proj = train_step_flops(cfg, 6, 1, trainable=["projector"])
    # frozen tower before anything trainable: forward only; projector 3x; frozen LM passes the gradient: 2x,
    # its attention products (no weights) 3x
    assert proj == FlopCount(fwd.vision, 3 * fwd.projector, 2 * fwd.text_linear, 3 * fwd.text_attention,
                             2 * fwd.lm_head)
    # everything trains: 3x, but the patch convolution computes no pixel gradient (2x)
    assert train_step_flops(cfg, 6, 1, trainable=TRAIN_ALL).total == 3 * fwd.total - 2 * 1536
    # with the features taken before the tower's only layer, that layer gets no gradient
    cfg.vision_feature_layer = -2
    assert train_step_flops(cfg, 6, 1, trainable=TRAIN_ALL).vision == 2 * 2 * 1536 + 2 * (2560 + 400)
    cfg.vision_feature_layer = -1
    lora = train_step_flops(cfg, 6, 1, trainable=[], lora_rank=2)
    # rank-2 adapters on q(8->8) k(8->4) v(8->4) o(8->8) gate/up(8->12) down(12->8): 2*(16+12+12+16+20+20+20) = 232
    assert lora.text_linear == 2 * fwd.text_linear + 3 * 2 * 6 * 232
    assert lora.projector == fwd.projector and lora.vision == fwd.vision
    with pytest.raises(ConfigError, match="unknown trainable"):
        train_step_flops(cfg, 6, 1, trainable=["lm"])


TRAIN_ALL = ("vision", "projector", "language")


def test_unknown_architecture_is_refused():
    cfg = hand_config()
    cfg.text_config.model_type = "mamba"
    with pytest.raises(ConfigError, match="mamba"):
        forward_flops(cfg, 4)


@pytest.fixture(scope="module")
def small_model():
    tok = train_tokenizer(["what is in the image red star blue circle"] * 10, 300)
    model, _ = build_llava(tok, LlavaShape(vision_feature_layer=-2), seed=0)
    model.set_attn_implementation("eager")  # CPU SDPA is not seen by FlopCounterMode; eager's matmuls are
    return model.eval()


def _prompt(model, text_tokens: int = 7):
    cfg = model.config
    n_img = image_tokens(cfg)
    ids = torch.randint(10, 100, (1, n_img + text_tokens))
    ids[0, 2 : 2 + n_img] = cfg.image_token_id
    return ids, torch.randn(1, 3, 32, 32)


def test_forward_and_decode_agree_with_torch_flop_counter(small_model):
    cfg = small_model.config
    ids, pix = _prompt(small_model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = small_model(input_ids=ids, pixel_values=pix, use_cache=True)
    assert forward_flops(cfg, ids.shape[1], 1).total == pytest.approx(counter.get_total_flops(), rel=0.03)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        small_model(input_ids=ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
    step = forward_flops(cfg, 1, 0, context=ids.shape[1])
    assert step.total == pytest.approx(counter.get_total_flops(), rel=0.03)


@pytest.mark.parametrize("trainable", [("projector",), TRAIN_ALL])
def test_train_step_agrees_with_torch_flop_counter(small_model, trainable):
    cfg = small_model.config
    ids, pix = _prompt(small_model)
    parts = {"vision": small_model.model.vision_tower, "projector": small_model.model.multi_modal_projector,
             "language": [small_model.model.language_model, small_model.lm_head]}
    for p in small_model.parameters():
        p.requires_grad_(False)
    for name in trainable:
        for module in parts[name] if isinstance(parts[name], list) else [parts[name]]:
            for p in module.parameters():
                p.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        small_model(input_ids=ids, pixel_values=pix, labels=ids).loss.backward()
    small_model.zero_grad(set_to_none=True)
    expected = train_step_flops(cfg, ids.shape[1], 1, trainable=trainable).total
    assert expected == pytest.approx(counter.get_total_flops(), rel=0.03)
