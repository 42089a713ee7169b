"""Scores and exact top-k selection: hand-computed values and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unforget.tailoring.scores import fused_score, sensitivity, zscore
from unforget.tailoring.selection import TopKSelector, sortable_keys, topk_mask, topk_threshold


def select(chunks: list[torch.Tensor], k: int, direct_limit: int = 1 << 24) -> list[torch.Tensor]:
    selector = TopKSelector(topk_threshold(lambda: chunks, k, direct_limit=direct_limit))
    return [selector.mask(c) for c in chunks]


def test_sortable_keys_keep_the_order_of_floats():
    values = torch.tensor([float("-inf"), -3.5, -1e-30, 0.0, 1e-30, 2.0, 7.25, float("inf")])
    keys = sortable_keys(values)
    assert torch.all(keys[1:] > keys[:-1])


@pytest.mark.parametrize("direct_limit", [0, 1 << 24], ids=["radix", "direct"])
def test_global_topk_is_exact_across_tensors(direct_limit):
    torch.manual_seed(0)
    chunks = [torch.randn(7, 13), torch.randn(50), torch.randn(3, 4, 5) * 10]
    everything = torch.cat([c.reshape(-1) for c in chunks])
    for k in (0, 1, 17, 200, everything.numel()):
        masks = select(chunks, k, direct_limit)
        chosen = torch.cat([m.reshape(-1) for m in masks])
        assert int(chosen.sum()) == k
        if 0 < k:
            kth = torch.sort(everything, descending=True).values[k - 1]
            assert bool((everything[chosen] >= kth).all()) and bool((everything[~chosen] <= kth).all())


@pytest.mark.parametrize("direct_limit", [0, 1 << 24], ids=["radix", "direct"])
def test_ties_are_broken_by_tensor_then_index_order(direct_limit):
    chunks = [torch.tensor([1.0, 5.0, 1.0]), torch.tensor([1.0, 1.0])]
    masks = select(chunks, 3, direct_limit)
    assert masks[0].tolist() == [True, True, True]
    assert masks[1].tolist() == [False, False]
    masks = select(chunks, 4, direct_limit)
    assert masks[1].tolist() == [True, False]


@pytest.mark.parametrize("direct_limit", [0, 1 << 24], ids=["radix", "direct"])
def test_minus_infinity_is_never_selected(direct_limit):
    chunks = [torch.tensor([float("-inf"), 2.0, float("-inf")]), torch.tensor([-1.0])]
    masks = select(chunks, 3, direct_limit)
    assert masks[0].tolist() == [False, True, False] and masks[1].tolist() == [True]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-3, 3), min_size=1, max_size=40), fraction=st.floats(0, 1))
def test_radix_and_direct_selection_agree_with_many_ties(values, fraction):
    scores = torch.tensor(values, dtype=torch.float32) / 2
    k = round(fraction * len(values))
    radix = topk_mask(scores, k, direct_limit=0)
    direct = topk_mask(scores, k)
    assert torch.equal(radix, direct)
    assert int(direct.sum()) == k
    # ties go to the lowest indices: a stable descending sort selects the same entries
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    expected = torch.zeros_like(direct)
    expected[order] = True
    assert torch.equal(direct, expected)


def test_block_zscore_by_hand():
    values = torch.tensor([[1.0, 3.0, 10.0, 10.0], [2.0, 4.0, 0.0, 6.0]])
    z = zscore(values, normalize="block", block_size=2)
    r = 1 / math.sqrt(2)  # (x - mean) / unbiased std for two values
    expected = torch.tensor([[-r, r, 0.0, 0.0], [-r, r, -r, r]])
    assert torch.allclose(z, expected, atol=1e-6)
    whole = zscore(values, normalize="tensor")
    assert whole.mean().abs() < 1e-6 and whole.std().sub(1).abs() < 1e-5
    assert torch.equal(zscore(values, normalize="none"), values)


def test_sensitivity_is_the_second_order_loss_increase_of_reverting():
    delta = torch.tensor([0.5, -2.0])
    fisher = torch.tensor([4.0, 1.0])
    assert torch.allclose(sensitivity(delta, fisher), torch.tensor([0.5, 2.0]))
    gradient = torch.tensor([1.0, 1.0])  # reverting moves by -delta: first-order change is -g * delta
    assert torch.allclose(sensitivity(delta, fisher, gradient), torch.tensor([0.0, 4.0]))


def test_fused_score_mixes_normalised_terms_and_ignores_unchanged_entries():
    delta = torch.tensor([[0.1, -0.4, 0.0, 0.2]])
    fisher = torch.tensor([[10.0, 0.1, 5.0, 1.0]])
    score = fused_score(delta, fusion=0.8, fisher=fisher, normalize="tensor")
    sal = zscore(delta.abs(), normalize="tensor")
    sens = zscore(0.5 * fisher * delta**2, normalize="tensor")
    expected = 0.8 * sal + 0.2 * sens
    assert score[0, 2] == float("-inf")
    assert torch.allclose(score[0, [0, 1, 3]], expected[0, [0, 1, 3]], atol=1e-6)
    magnitude = fused_score(delta, fusion=1.0, normalize="none")
    assert magnitude[0, [0, 1, 3]].tolist() == pytest.approx([0.1, 0.4, 0.2])
    with pytest.raises(ValueError, match="Fisher"):
        fused_score(delta, fusion=0.5)
