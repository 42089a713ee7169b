"""The frozen vision tower's feature cache (models/feature_cache.py) on the embedded tiny-llava.

A run with the cache equals a run without it bit for bit (losses, every weight, every evaluation answer) while the
cache answers most tower calls; a tower that trains is never cached; a tower with other weights misses; features
beyond the memory budget go to disk and come back equal; the switch does not change a run's identity."""

from pathlib import Path

import pytest
import torch

from unforget.evaluation.config import EvalConfig
from unforget.evaluation.evaluator import evaluate
from unforget.identity import run_identity
from unforget.models.config import ModelConfig
from unforget.models.feature_cache import CACHE_FOLDER, cached_vision_tower, vision_feature_cache
from unforget.models.loading import load_model
from unforget.runs import RunDir
from unforget.training import FinetuneConfig, TrainDataConfig, finetune

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny-llava"


def train_config(out: Path, cache: bool, **overrides) -> FinetuneConfig:
    values = dict(model=ModelConfig(name=MODEL, device="cpu"), data=TrainDataConfig(datasets=["digits"], limit=16),
                  method="lora", method_options={"r": 4, "dropout": 0.1}, lr=1e-2, epochs=2, batch_size=8,
                  out=str(out), cache_vision_features=cache)
    values.update(overrides)
    return FinetuneConfig(**values)


def train_and_evaluate(cfg: FinetuneConfig, eval_dir: Path):
    """Fine-tune with an evaluation after every epoch (its records in ``eval_dir``); the cache's counts."""
    ev = EvalConfig(model=ModelConfig(name=MODEL), datasets=["digits", "shapes"], limit=6, batch_size=4,
                    max_new_tokens=4)
    run = RunDir(eval_dir)
    run.path.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(epoch, lm):
        evaluate(ev, lm=lm, run=run, tag={"epoch": epoch})

    with vision_feature_cache(cfg.cache_vision_features) as cache:
        result = finetune(cfg, on_epoch_end=on_epoch_end)
    answers = [(r["epoch"], r["dataset"], r["id"], r["prediction"]) for r in run.samples()]
    weights = {k: v.detach().clone() for k, v in result.lm.model.state_dict().items()}
    return result.losses, weights, answers, cache.stats if cache else None


def test_cached_run_equals_uncached_bit_for_bit(tmp_path):
    losses, weights, answers, stats = train_and_evaluate(train_config(tmp_path / "on", True), tmp_path / "ev-on")
    plain_losses, plain_weights, plain_answers, _ = train_and_evaluate(train_config(tmp_path / "off", False),
                                                                       tmp_path / "ev-off")
    # 16 training images twice, 12 evaluation images twice: each computed once, reused once
    assert (stats.computed, stats.reused, stats.bypassed) == (28, 28, 0)
    assert losses == plain_losses and len(losses) == 4
    assert weights.keys() == plain_weights.keys()
    for key in weights:
        assert torch.equal(weights[key], plain_weights[key]), key
    assert answers == plain_answers and len(answers) == 24
    assert not (tmp_path / "on" / CACHE_FOLDER).exists()


def test_a_tower_that_trains_is_never_cached(tmp_path):
    cfg = train_config(tmp_path / "full", True, method="full", method_options={"freeze_vision_tower": False},
                       lr=1e-3, epochs=2)
    before = {k: v.clone() for k, v in load_model(MODEL, device="cpu").model.model.vision_tower.state_dict().items()}
    losses, weights, _, stats = train_and_evaluate(cfg, tmp_path / "ev")
    assert (stats.computed, stats.reused) == (0, 0) and stats.bypassed > 0
    prefix = "model.vision_tower."
    after = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did train


def pixels(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def image_features(model, px: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=px, vision_feature_layer=model.config.vision_feature_layer,
                                             vision_feature_select_strategy=model.config.vision_feature_select_strategy)
    return torch.cat(list(out.pooler_output))


def tower_weight(model, name: str) -> torch.nn.Parameter:
    return dict(model.model.vision_tower.named_parameters())[name]


def test_a_changed_tower_misses():
    a = load_model(MODEL, device="cpu").model
    b = load_model(MODEL, device="cpu").model
    with torch.no_grad():
        tower_weight(b, "encoder.layers.0.mlp.fc1.weight")[0, 0] += 1e-3  # one weight of many
    px = pixels()
    plain_a, plain_b = image_features(a, px), image_features(b, px)
    assert not torch.equal(plain_a, plain_b)
    with vision_feature_cache() as cache:
        with cached_vision_tower(a):
            assert torch.equal(image_features(a, px), plain_a)
            assert torch.equal(image_features(a, px), plain_a)
            assert (cache.stats.computed, cache.stats.reused) == (4, 4)
        with cached_vision_tower(b):
            assert torch.equal(image_features(b, px), plain_b)  # other weights: computed, not a's features
        assert (cache.stats.computed, cache.stats.reused) == (8, 4)
        with cached_vision_tower(a):
            with torch.no_grad():
                tower_weight(a, "encoder.layers.2.layer_norm1.weight").mul_(1.5)  # changed in place while installed
            changed = image_features(a, px)
        assert (cache.stats.computed, cache.stats.reused) == (12, 4)
    assert torch.equal(changed, image_features(a, px)) and not torch.equal(changed, plain_a)
    assert "forward" not in vars(a.model.vision_tower)  # uninstalled


def test_features_beyond_the_memory_budget_go_to_disk(tmp_path):
    model = load_model(MODEL, device="cpu").model
    px = pixels(6)
    plain = image_features(model, px)
    with vision_feature_cache(spill_dir=tmp_path / CACHE_FOLDER, memory_bytes=0) as cache:
        with cached_vision_tower(model):
            image_features(model, px[:3])
            cache.store.flush()
            assert len(list((tmp_path / CACHE_FOLDER).rglob("*.safetensors"))) == 1
            assert torch.equal(image_features(model, px), plain)  # 3 unknown: the batch computed, 3 stored
            assert torch.equal(image_features(model, px), plain)  # 3 from the shard, 3 waiting for disk
        assert (cache.stats.computed, cache.stats.reused) == (6, 6)
        assert not cache.store.memory
    assert not (tmp_path / CACHE_FOLDER).exists()  # removed when the block ended


def test_the_switch_is_not_part_of_a_run_identity(tmp_path):
    on, off = train_config(tmp_path, True), train_config(tmp_path, False)
    assert run_identity(on) == run_identity(off)


@pytest.mark.parametrize("family, cached", [("llava_next", True), ("qwen2_vl", False)])
def test_other_families(tmp_path, family, cached):
    """LLaVA-NeXT's tower sees every tile of every image as one row: cached per tile, the logits unchanged;
    Qwen2-VL's ``visual`` holds its projector: left alone."""
    import numpy as np
    from PIL import Image

    from tests.tiny_models import make_tiny_model

    lm = load_model(str(make_tiny_model(family, tmp_path / family)), device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    text = lm.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour"}]}],
        add_generation_prompt=True)
    batch = lm.processor(images=[image], text=[text], return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = lm.model(**batch).logits
        with vision_feature_cache() as cache, cached_vision_tower(lm.model) as installed:
            first, second = lm.model(**batch).logits, lm.model(**batch).logits
    assert installed == cached
    assert torch.equal(first, plain) and torch.equal(second, plain)
    if cached:
        tiles = cache.stats.computed
        assert tiles > 1 and cache.stats.reused >= tiles  # the second call: every tile from the cache
