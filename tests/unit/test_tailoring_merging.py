"""Merging baselines on hand-made weights: WiSE-FT averaging, task arithmetic, TIES, DARE, magnitude."""

from __future__ import annotations

import pytest
import torch

from unforget.errors import ConfigError
from unforget.tailoring import tailor
from unforget.tailoring.checkpoints import StateDictCheckpoint

UP = "language_model.model.layers.0.mlp.up_proj.weight"
PROJ = "multi_modal_projector.linear_1.weight"
VISION = "vision_tower.encoder.layers.0.mlp.fc1.weight"  # not considered by default


def checkpoints(*deltas: dict[str, torch.Tensor]):
    base = {UP: torch.zeros(1, 4), PROJ: torch.arange(6.0).reshape(2, 3), VISION: torch.ones(2, 2)}
    tuned = [StateDictCheckpoint({k: base[k] + d.get(k, torch.zeros_like(base[k])) for k in base}) for d in deltas]
    return StateDictCheckpoint(base), tuned


TAU1 = {UP: torch.tensor([[4.0, -1.0, 2.0, -3.0]]), PROJ: torch.full((2, 3), 0.5), VISION: torch.ones(2, 2)}
TAU2 = {UP: torch.tensor([[-2.0, 3.0, 1.0, -5.0]]), PROJ: torch.full((2, 3), -1.5)}


def test_average_interpolates_towards_the_mean_finetuned_model():
    base, tuned = checkpoints(TAU1, TAU2)
    result = tailor(base, tuned, method="average", alpha=0.25)
    out = result.state_dict()
    assert torch.allclose(out[UP], 0.25 * (TAU1[UP] + TAU2[UP]) / 2)
    assert torch.allclose(out[PROJ], base.get(PROJ) + 0.25 * (0.5 - 1.5) / 2)
    assert torch.equal(out[VISION], base.get(VISION))  # only considered modules change


def test_task_arithmetic_adds_scaled_task_vectors():
    base, tuned = checkpoints(TAU1, TAU2)
    out = tailor(base, tuned, method="task-arithmetic", scaling_coef=0.5).state_dict()
    assert torch.allclose(out[UP], 0.5 * (TAU1[UP] + TAU2[UP]))


def test_ties_trims_elects_signs_and_averages_agreeing_entries():
    base, tuned = checkpoints(TAU1, TAU2)
    out = tailor(base, tuned, method="ties", density=0.5, scaling_coef=1.0).state_dict()
    # trimmed: [4, 0, 0, -3] and [0, 3, 0, -5]; signs by total: +, +, (0 -> +), -; disjoint mean
    assert out[UP].tolist() == [[4.0, 3.0, 0.0, -4.0]]
    half = tailor(base, tuned, method="ties", density=0.5, scaling_coef=0.5).state_dict()
    assert half[UP].tolist() == [[2.0, 1.5, 0.0, -2.0]]


def test_dare_drops_and_rescales_reproducibly():
    base, tuned = checkpoints(TAU1)
    first = tailor(base, tuned, method="dare", density=0.5, seed=7).state_dict()[PROJ] - base.get(PROJ)
    again = tailor(base, tuned, method="dare", density=0.5, seed=7).state_dict()[PROJ] - base.get(PROJ)
    assert torch.equal(first, again)
    assert set(first.reshape(-1).tolist()) <= {0.0, 1.0}  # dropped, or 0.5 rescaled by 1 / 0.5
    others = [tailor(base, tuned, method="dare", density=0.5, seed=s).state_dict()[PROJ] for s in range(8, 12)]
    assert any(not torch.equal(o - base.get(PROJ), first) for o in others)
    unscaled = tailor(base, tuned, method="dare", density=0.5, seed=7, rescale=False).state_dict()[PROJ]
    assert set((unscaled - base.get(PROJ)).reshape(-1).tolist()) <= {0.0, 0.5}
    with pytest.warns(UserWarning):  # peft: density 1 prunes nothing
        everything = tailor(base, tuned, method="dare", density=1.0).state_dict()
    assert torch.allclose(everything[UP], TAU1[UP])


def test_magnitude_grafts_the_largest_changes():
    base, tuned = checkpoints(TAU1)
    result = tailor(base, tuned, method="magnitude", sparsity=0.3)  # 3 of 10 considered entries
    out = result.state_dict()
    assert result.patch.size == 3
    assert out[UP].tolist() == [[4.0, 0.0, 2.0, -3.0]]
    assert torch.equal(out[PROJ], base.get(PROJ))
    assert torch.equal(out[VISION], base.get(VISION))


def test_option_ranges_are_checked():
    base, tuned = checkpoints(TAU1)
    with pytest.raises(ConfigError, match="density"):
        tailor(base, tuned, method="ties", density=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        tailor(base, tuned, method="average", alpha=2.0)
    with pytest.raises(ConfigError, match="sparsity"):
        tailor(base, tuned, method="magnitude", sparsity=1.5)
    with pytest.raises(ConfigError, match="overlap"):
        tailor(base, tuned, method="magnitude", overlap="max")


def test_default_modules_match_both_naming_schemes():
    from unforget.tailoring import considered_keys

    names = {
        "language_model.model.layers.0.mlp.up_proj.weight": (4, 2),  # saved by transformers
        "model.language_model.layers.1.mlp.up_proj.weight": (4, 2),  # in-memory names
        "model.multi_modal_projector.linear_1.weight": (2, 2),
        "language_model.model.layers.0.input_layernorm.weight": (4,),  # 1-D
        "language_model.lm_head.weight": (8, 4),
        "language_model.model.embed_tokens.weight": (8, 4),
        "vision_tower.encoder.layers.0.mlp.fc1.weight": (2, 2),
    }
    checkpoint = StateDictCheckpoint({k: torch.zeros(s) for k, s in names.items()})
    assert considered_keys(checkpoint) == sorted(list(names)[:3])
    assert considered_keys(checkpoint, ["vision_tower"]) == ["vision_tower.encoder.layers.0.mlp.fc1.weight"]
    assert len(considered_keys(checkpoint, ["language_model"], matrices_only=False)) == 5
    with pytest.raises(ConfigError, match="list of name patterns"):
        considered_keys(checkpoint, "vision_tower")
