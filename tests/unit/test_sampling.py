"""Which samples a limit keeps (data/sampling.py): class shares by hand, determinism, head, and every user of a limit
(evaluation, training, the mix of a budget, the probe set, the linear probe's class check, the report sentence)."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from unforget.data import ImageDataset, Sample
from unforget.data.sampling import Sampling, largest_remainder, select, select_split, stratified_counts
from unforget.errors import ConfigError

SIZES = [40, 30, 20, 6, 4]  # a class-sorted split of 100 samples


def sorted_split(sizes=SIZES, prefix="s"):
    """Samples sorted by class, as an image folder lists them: all of class 0, then all of class 1, ..."""
    return [Sample(id=f"{prefix}{i:03d}", label=c)
            for i, c in enumerate(c for c, n in enumerate(sizes) for _ in range(n))]


def classification(sizes=SIZES, name="sorted"):
    return ImageDataset(name, "classification", {"test": sorted_split(sizes), "train": sorted_split(sizes, "t")},
                        class_names=[f"c{i}" for i in range(len(sizes))], templates=["Which class? {classes}"])


def test_largest_remainder_moved_here_keeps_its_hand_computed_results():
    from unforget.training import mixing

    assert mixing.largest_remainder is largest_remainder  # one implementation, mixing imports it
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(7, [0.5, 0.25, 0.25]) == [3, 2, 2]


def test_stratified_counts_by_hand():
    # limit 10 of 40/30/20/6/4: exact shares 4, 3, 2, 0.6, 0.4 -> floors 4, 3, 2, 0, 0; the one left over goes to
    # the largest remainder (0.6) -> 4, 3, 2, 1, 0; class 4 must be present (10 >= 5 classes): it takes one from the
    # class most over its share (all of 0..2 are exactly at it: the larger, class 0) -> 3, 3, 2, 1, 1
    assert stratified_counts(SIZES, 10) == [3, 3, 2, 1, 1]
    # limit 7: exact 2.8, 2.1, 1.4, 0.42, 0.28 -> floors 2, 2, 1, 0, 0, two left: remainders .8 (class 0), .42
    # (class 3) -> 3, 2, 1, 1, 0; class 4 takes one from class 0 (3 - 2.8 = .2 over; class 1 is .1 under)
    # -> 2, 2, 1, 1, 1
    assert stratified_counts(SIZES, 7) == [2, 2, 1, 1, 1]
    # limit 3 < 5 classes: no class is guaranteed; exact 1.2, .9, .6, .18, .12 -> 1, 0, 0, 0, 0, then .9 and .6
    assert stratified_counts(SIZES, 3) == [1, 1, 1, 0, 0]
    assert stratified_counts([60, 30, 10], 20) == [12, 6, 2]  # exact proportions need no rounding


def test_stratified_select_covers_every_class_in_proportion():
    samples = sorted_split()
    chosen = select(samples, 10, key="sorted/test")
    assert Counter(s.label for s in chosen) == {0: 3, 1: 3, 2: 2, 3: 1, 4: 1}
    assert [s.id for s in chosen] == sorted(s.id for s in chosen)  # the split's own order
    assert len({s.id for s in chosen}) == 10
    assert Counter(s.label for s in select(samples, 20, key="sorted/test")) == {0: 8, 1: 6, 2: 4, 3: 1, 4: 1}


def test_head_keeps_the_first_n_and_a_limit_at_or_above_the_split_keeps_all():
    samples = sorted_split()
    assert select(samples, 10, strategy="head") == samples[:10]
    assert {s.label for s in select(samples, 10, strategy="head")} == {0}  # why head is not the default
    assert select(samples, None) == samples and select(samples, 100) == samples and select(samples, 500) == samples
    with pytest.raises(ConfigError, match="unknown"):
        select(samples, 10, strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=">= 1"):
        select(samples, 0)


def test_the_sample_depends_on_split_limit_strategy_and_seed_only():
    samples = sorted_split()
    first = select(samples, 10, seed=0, key="sorted/test")
    assert select(list(samples), 10, seed=0, key="sorted/test") == first  # again, from a copy: the same
    assert select(samples, 10, seed=1, key="sorted/test") != first  # another seed, another sample ...
    assert Counter(s.label for s in select(samples, 10, seed=1, key="sorted/test")) == Counter(s.label for s in first)
    assert [s.id for s in select(samples, 10, seed=0, key="sorted/train")] != [s.id for s in first]
    # within a class the picks of a smaller limit stay in a larger one (a permutation per class, cut shorter)
    small, large = select(samples, 10, key="sorted/test"), select(samples, 20, key="sorted/test")
    assert {s.id for s in small if s.label in (0, 1, 2)} <= {s.id for s in large}


def test_equal_classes_share_the_leftover_by_a_seeded_order_not_the_class_order():
    samples = sorted_split([20] * 5)
    picks = {seed: Counter(s.label for s in select(samples, 7, seed=seed, key="even/test")) for seed in range(8)}
    assert all(sorted(c.values()) == [1, 1, 1, 2, 2] for c in picks.values())  # 1.4 each: two classes get 2
    favoured = {frozenset(k for k, v in c.items() if v == 2) for c in picks.values()}
    assert len(favoured) > 1  # not always classes 0 and 1


def test_select_split_states_the_sampling():
    ds = classification()
    chosen, sampling = select_split(ds, "test", 10, seed=3)
    assert sampling == Sampling("stratified", 10, 3, 10, 100, "class")
    assert sampling.to_dict() == {"strategy": "stratified", "limit": 10, "seed": 3, "n": 10, "population": 100,
                                  "stratified_by": "class"}
    assert len({s.label for s in chosen}) == 5
    _, whole = select_split(ds, "test", None)
    assert whole == Sampling("stratified", None, 0, 100, 100, None)
    head, info = select_split(ds, "test", 10, strategy="head")
    assert head == ds.split("test")[:10] and info.stratified_by is None


def test_vqa_is_stratified_by_answer_captions_and_text_uniformly():
    answers = ["yes"] * 8 + ["no"] * 8 + ["Red "] * 4  # sorted by answer; "Red " counts as "red"
    vqa = ImageDataset("v", "vqa", {"test": [Sample(f"q{i}", question="?", answer=a) for i, a in enumerate(answers)]})
    chosen, sampling = select_split(vqa, "test", 5)
    assert Counter(s.answer for s in chosen) == {"yes": 2, "no": 2, "Red ": 1}  # exact 2, 2, 1
    assert sampling.stratified_by == "answer"
    text = ImageDataset("t", "text", {"test": [Sample(f"t{i}", question="?", answer=f"a{i}") for i in range(50)]})
    chosen, sampling = select_split(text, "test", 10)
    assert sampling.stratified_by == "uniform" and len(chosen) == 10
    assert chosen != text.split("test")[:10] and chosen == select_split(text, "test", 10)[0]


def test_evaluator_samples_are_the_same_call_for_every_model_epoch_and_arm():
    from unforget.evaluation.evaluator import select_samples

    ds = classification()
    samples, sampling = select_samples(ds, "test", 10, "stratified", 0)  # takes no model and no epoch
    again, _ = select_samples(classification(), "test", 10, "stratified", 0)  # a fresh load of the same split
    assert [s.id for s in samples] == [s.id for s in again]
    assert Counter(s.label for s in samples) == {0: 3, 1: 3, 2: 2, 3: 1, 4: 1}
    assert sampling.population == 100


def test_eval_config_defaults_to_stratified_and_checks_the_name():
    from unforget.config import load_config
    from unforget.evaluation.config import EvalConfig, LanguageConfig, ProbeConfig
    from unforget.training.config import TrainDataConfig

    assert EvalConfig().sampling == "stratified" and ProbeConfig().sampling == "stratified"
    assert LanguageConfig().sampling == "stratified" and TrainDataConfig().sampling == "stratified"
    assert load_config(EvalConfig, None, ["sampling=head"]).sampling == "head"
    with pytest.raises(ConfigError, match="Did you mean 'head'"):
        load_config(EvalConfig, None, ["sampling=haed"])


def test_training_limit_is_stratified_after_the_class_filter():
    from unforget.training.config import TrainDataConfig
    from unforget.training.data import select_training_samples

    ds = classification()
    chosen = select_training_samples(ds, TrainDataConfig(datasets=["sorted"], limit=10))
    assert Counter(s.label for s in chosen) == {0: 3, 1: 3, 2: 2, 3: 1, 4: 1}
    head = select_training_samples(ds, TrainDataConfig(datasets=["sorted"], limit=10, sampling="head"))
    assert head == ds.split("train")[:10]
    filtered = select_training_samples(ds, TrainDataConfig(datasets=["sorted"], limit=6, classes=[2, 4]))
    assert Counter(s.label for s in filtered) == {2: 5, 4: 1}  # 20 and 4 of 24: exact 5, 1
    other_seed = select_training_samples(ds, TrainDataConfig(datasets=["sorted"], limit=10, sampling_seed=1))
    assert [s.id for s in other_seed] != [s.id for s in chosen]


def test_a_mix_budget_smaller_than_a_source_draws_from_it_as_a_limit_does():
    from unforget.data import DATASETS
    from unforget.training.config import TrainDataConfig
    from unforget.training.data import training_items

    if "sampling-sorted" not in DATASETS:
        DATASETS.register("sampling-sorted", lambda: classification(name="sampling-sorted"),
                          description="class-sorted test set", task="test")
    cfg = TrainDataConfig(datasets=["sampling-sorted"], budget=10)
    items, _ = training_items(cfg)
    assert Counter(it.sample.label for it in items) == {0: 3, 1: 3, 2: 2, 3: 1, 4: 1}
    head, _ = training_items(TrainDataConfig(datasets=["sampling-sorted"], budget=10, sampling="head"))
    assert {it.sample.label for it in head} == {0}


def test_a_dataset_alone_at_a_budget_trains_on_what_the_same_limit_gives():
    from tests.finetune_helpers import register_datasets
    from unforget.training.config import TrainDataConfig
    from unforget.training.data import training_items

    register_datasets()  # ft-colours: 12 train samples, two templates
    by_limit, _ = training_items(TrainDataConfig(datasets=["ft-colours"], limit=5, template="round-robin"))
    by_budget, _ = training_items(TrainDataConfig(datasets=["ft-colours"], budget=5, template="round-robin"))
    assert [(it.sample.id, it.question) for it in by_budget] == [(it.sample.id, it.question) for it in by_limit]
    assert by_limit[0].question != by_limit[1].question  # round-robin over the sample, not over the split


def test_a_mix_asks_its_pick_only_for_a_proper_part_of_a_source():
    from unforget.training.config import TrainDataConfig
    from unforget.training.mixing import mix_sources

    asked = []

    def pick(index, items, count):
        asked.append((index, count))
        return list(items[-count:])

    whole = TrainDataConfig(datasets=["a", "b"], mix_strategy="interleave_under", interleave_probs=[1.0, 0.0])
    assert mix_sources([["a0", "a1"], ["b0", "b1"]], whole, pick=pick) == ["a0", "a1"]  # all of a, none of b
    assert asked == []
    part = TrainDataConfig(datasets=["a", "b"], mix_strategy="interleave_under", interleave_probs=[1.0, 0.0],
                           budget=1)
    assert mix_sources([["a0", "a1"], ["b0", "b1"]], part, pick=pick) == ["a1"]
    assert asked == [(0, 1)]


def _image_folder(root, classes, per_class):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_probe_set_covers_every_class_of_a_sorted_folder(tmp_path):
    from unforget.evaluation.probe import probe_samples

    root = _image_folder(tmp_path / "five", ["a", "b", "c", "d", "e"], 6)
    probe = probe_samples([f"imagefolder:{root}"], "test", 5)
    assert sorted(s.key.split("/")[-2] for s in probe) == ["a", "b", "c", "d", "e"]  # one of each class
    head = probe_samples([f"imagefolder:{root}"], "test", 5, sampling="head")
    assert {s.key.split("/")[-2] for s in head} == {"a"}
    assert [s.key for s in probe_samples([f"imagefolder:{root}"], "test", 5)] == [s.key for s in probe]


def test_untrained_classes_names_test_classes_missing_from_training():
    from unforget.evaluation.encoder import untrained_classes

    ds = classification()
    assert untrained_classes(ds, [0, 1, 1], [0, 2, 4, 2]) == ["c2", "c4"]
    assert untrained_classes(ds, [0, 1, 2, 3, 4], [4, 0]) == []


def test_report_sentence_states_the_sampling():
    from unforget.reports.eval_run import sampling_notes, sampling_sentence

    stated = {"strategy": "stratified", "limit": 50, "seed": 0, "n": 50, "population": 1797, "stratified_by": "class"}
    assert sampling_sentence(stated, "test") == "50 of 1,797 test samples, class-stratified, seed 0"
    assert sampling_sentence({**stated, "strategy": "head", "stratified_by": None}, "test") == \
        "the first 50 of 1,797 test samples"
    assert sampling_sentence({**stated, "limit": None, "n": 1797}, "test") == "all 1,797 test samples"
    assert sampling_sentence({**stated, "stratified_by": "uniform", "seed": 2}) == \
        "50 of 1,797 samples, uniform, seed 2"
    notes = sampling_notes({"digits": {"sampling": stated, "baselines": {"linear-probe": {
        "untrained_classes": ["c", "d"]}}}}, {"digits": "digits"}, "test")
    text = " ".join(getattr(b, "text", "") or " ".join(getattr(b, "items", [])) for b in notes)
    assert "digits: 50 of 1,797 test samples, class-stratified, seed 0." in text
    assert "no training sample of c, d" in text
