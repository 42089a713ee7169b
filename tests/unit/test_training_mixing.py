"""Data-hybrid mixing: counts with a fixed budget (hand-computed), which examples are taken, batch-pure order."""

import numpy as np
import pytest

from tests.finetune_helpers import register_datasets
from unforget.config import from_dict
from unforget.errors import ConfigError
from unforget.training.config import TrainDataConfig
from unforget.training.data import EpochShuffleSampler, training_items
from unforget.training.mixing import (
    SourceBatchSampler,
    largest_remainder,
    mix_counts,
    mix_sources,
    source_batch_order,
    take,
)


def test_largest_remainder_hands_leftovers_to_the_largest_remainders():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]  # 3.33 each: the tie goes to the first
    assert largest_remainder(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75: remainders .5 < .75
    assert largest_remainder(5, [1, 0]) == [5, 0]
    assert largest_remainder(0, [1, 2]) == [0, 0]


def test_largest_remainder_rejects_bad_weights():
    with pytest.raises(ConfigError):
        largest_remainder(3, [0, 0])
    with pytest.raises(ConfigError):
        largest_remainder(3, [1, -1])


def test_concat_keeps_sizes_or_splits_the_budget_by_size():
    assert mix_counts([10, 5]) == [10, 5]
    assert mix_counts([10, 5], budget=6) == [4, 2]
    with pytest.raises(ConfigError, match="exceeds the 15 examples"):
        mix_counts([10, 5], budget=16)
    with pytest.raises(ConfigError, match="interleave_probs needs"):
        mix_counts([10, 5], [0.5, 0.5], "concat")


def test_interleave_under_never_repeats():
    # 0.25 * T <= 10 -> T = 40
    assert mix_counts([100, 10], [0.75, 0.25], "interleave_under") == [30, 10]
    assert mix_counts([100, 10], [3, 1], "interleave_under", budget=32) == [24, 8]  # shares are normalised
    with pytest.raises(ConfigError, match="at most 40"):
        mix_counts([100, 10], [0.75, 0.25], "interleave_under", budget=48, names=["task", "other"])


def test_interleave_under_without_probs_is_equal_shares():
    assert mix_counts([7, 100, 100], None, "interleave_under") == [7, 7, 7]


def test_interleave_over_repeats_to_cover_every_source():
    # 0.5 * T >= 100 -> T = 200
    assert mix_counts([100, 10], [0.5, 0.5], "interleave_over") == [100, 100]
    assert mix_counts([100, 10], [0.5, 0.5], "interleave_over", budget=64) == [32, 32]


def test_a_zero_share_source_gives_nothing():
    assert mix_counts([256, 0], [1.0, 0.0], "interleave_under", budget=128) == [128, 0]


def test_a_source_with_a_share_but_no_example_is_an_error():
    with pytest.raises(ConfigError, match="no example"):
        mix_counts([10, 0], [0.5, 0.5], "interleave_over", names=["a", "b"])


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.5, 0.75])
def test_fixed_budget_holds_for_every_ratio(ratio):
    counts = mix_counts([1000, 500, 500], [1 - ratio, ratio / 2, ratio / 2], "interleave_under", budget=128)
    assert sum(counts) == 128
    assert counts[0] == round((1 - ratio) * 128)


def test_take_gives_the_first_items_and_cycles():
    assert take("abc", 2) == ["a", "b"]
    assert take("ab", 5) == ["a", "b", "a", "b", "a"]


def test_mix_sources_takes_prefixes_in_dataset_order():
    cfg = TrainDataConfig(datasets=["t", "o"], mix_strategy="interleave_over", interleave_probs=[0.5, 0.5], budget=6)
    assert mix_sources([["t0", "t1", "t2", "t3"], ["o0", "o1"]], cfg) == ["t0", "t1", "t2", "o0", "o1", "o0"]
    plain = TrainDataConfig(datasets=["t", "o"])
    assert mix_sources([["t0"], ["o0", "o1"]], plain) == ["t0", "o0", "o1"]


def test_source_batch_order_makes_pure_batches():
    sources = [0] * 8 + [1] * 4
    order = source_batch_order(sources, 4, np.random.default_rng(0))
    assert sorted(order) == list(range(12))
    batches = [order[i : i + 4] for i in range(0, 12, 4)]
    assert all(len({sources[i] for i in b}) == 1 for b in batches)
    assert sorted(sources[b[0]] for b in batches) == [0, 0, 1]


def test_source_batch_order_pools_leftovers_and_keeps_the_partial_batch_last():
    sources = [0] * 5 + [1] * 6  # whole batches of 4: one of each; leftovers 1 + 2 -> one partial batch of 3
    order = source_batch_order(sources, 4, np.random.default_rng(3))
    assert sorted(order) == list(range(11))
    full = [order[0:4], order[4:8]]
    assert all(len({sources[i] for i in b}) == 1 for b in full)
    assert sorted(sources[i] for i in order[8:]) == [0, 1, 1]


def test_source_batch_sampler_depends_on_seed_and_epoch_only():
    sources = [0] * 16 + [1] * 16
    a, b = SourceBatchSampler(sources, 4, seed=1), SourceBatchSampler(sources, 4, seed=1)
    assert list(a) == list(b) and len(a) == 32
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_mixing_fields_are_checked_at_config_time():
    with pytest.raises(ConfigError, match="mix_strategy"):
        from_dict(TrainDataConfig, {"datasets": ["a"], "mix_strategy": "interleave"})
    with pytest.raises(ConfigError, match="one per dataset"):
        from_dict(TrainDataConfig, {"datasets": ["a", "b"], "mix_strategy": "interleave_under",
                                    "interleave_probs": [1.0]})
    with pytest.raises(ConfigError, match="interleave_probs needs"):
        from_dict(TrainDataConfig, {"datasets": ["a", "b"], "interleave_probs": [0.5, 0.5]})


def test_training_items_mix_real_datasets_with_a_budget():
    register_datasets()  # ft-colours: 12 train samples; ft-colours-vqa: 6
    cfg = TrainDataConfig(datasets=["ft-colours", "ft-colours-vqa"], mix_strategy="interleave_over",
                          interleave_probs=[0.5, 0.5], budget=16)
    items, _ = training_items(cfg)
    assert [it.dataset for it in items] == ["ft-colours"] * 8 + ["ft-colours-vqa"] * 8
    vqa = [it.sample.id for it in items[8:]]
    assert vqa == [f"q-{i}" for i in range(6)] + ["q-0", "q-1"]  # 6 examples, the first two again


def test_sampler_for_items_is_the_plain_shuffle_unless_mixing_by_batch():
    register_datasets()
    cfg = TrainDataConfig(datasets=["ft-colours", "ft-colours-vqa"])
    items, _ = training_items(cfg)
    plain = EpochShuffleSampler.for_items(items, cfg, seed=0, batch_size=4)
    assert type(plain) is EpochShuffleSampler and list(plain) == list(EpochShuffleSampler(len(items), 0))
    by_batch = TrainDataConfig(datasets=["ft-colours", "ft-colours-vqa"], mix_by="batch")
    sampler = EpochShuffleSampler.for_items(items, by_batch, seed=0, batch_size=6)
    order = list(sampler)
    assert all(len({items[i].dataset for i in order[k : k + 6]}) == 1 for k in range(0, 18, 6))
