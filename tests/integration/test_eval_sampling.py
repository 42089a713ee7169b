"""`unforget eval --limit` through the real CLI on a class-sorted image folder: every class is evaluated, the sample
is the same for every model, `--sampling head` keeps the first N, metrics.json and the report state the sampling,
and the linear probe warns when its training classes miss the test classes."""

import json
import logging
from collections import Counter

import numpy as np
from PIL import Image

from unforget.cli import main
from unforget.runs import read_jsonl

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def run_cli(*args):
    return main([str(a) for a in args])


def image_folder(root, classes, per_class, seed=0):
    """root/<class>/<i>.png: listed class by class, as an image folder is read."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def dataset_metrics(out):
    (figures,) = json.loads((out / "metrics.json").read_text())["datasets"].values()
    return figures


def evaluated_classes(out):
    return Counter(r["reference"] for r in read_jsonl(out / "samples.jsonl"))


def test_limit_draws_every_class_of_a_sorted_folder_and_says_so(tmp_path):
    folder = image_folder(tmp_path / "five", CLASSES, 6)  # 30 test samples, sorted by class
    out = tmp_path / "stratified"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"imagefolder:{folder}", "--limit", 10,
                   "--mode", "rank", "--out", out) == 0
    assert evaluated_classes(out) == {c: 2 for c in CLASSES}  # 10 of 30 in 5 equal classes: 2 each
    assert dataset_metrics(out)["sampling"] == {"strategy": "stratified", "limit": 10, "seed": 0, "n": 10,
                                                "population": 30, "stratified_by": "class"}
    assert run_cli("report", out) == 0
    assert "10 of 30 test samples, class-stratified, seed 0" in (out / "report.md").read_text()

    head = tmp_path / "head"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"imagefolder:{folder}", "--limit", 10,
                   "--mode", "rank", "--sampling", "head", "--out", head) == 0
    assert evaluated_classes(head) == {"ant": 6, "bee": 4}  # the first 10: what --limit did before
    assert dataset_metrics(head)["sampling"]["strategy"] == "head"


def test_the_sample_does_not_depend_on_the_model(tmp_path, random_llava_dir):
    folder = image_folder(tmp_path / "five", CLASSES, 6)
    ids = {}
    for name, model in (("tiny", "tiny-llava"), ("random", random_llava_dir)):
        out = tmp_path / name
        assert run_cli("eval", "--model", model, "--datasets", f"imagefolder:{folder}", "--limit", 7,
                       "--mode", "rank", "--out", out) == 0
        ids[name] = [r["id"] for r in read_jsonl(out / "samples.jsonl")]
    assert ids["tiny"] == ids["random"] and len(ids["tiny"]) == 7
    other = tmp_path / "seed1"
    assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"imagefolder:{folder}", "--limit", 7,
                   "--mode", "rank", "--out", other, "seed=1") == 0
    assert [r["id"] for r in read_jsonl(other / "samples.jsonl")] != ids["tiny"]  # the seed does change it


def test_linear_probe_warns_when_training_classes_miss_test_classes(tmp_path, caplog):
    root = tmp_path / "disjoint"
    image_folder(root / "train", ["ant", "bee"], 4)
    image_folder(root / "test", ["cat", "dog"], 3, seed=1)  # class-disjoint splits (few-shot style)
    out = tmp_path / "probe"
    with caplog.at_level(logging.WARNING, logger="unforget.evaluation.encoder"):
        assert run_cli("eval", "--model", "tiny-llava", "--datasets", f"imagefolder:{root}", "--mode", "rank",
                       "--baselines", "linear-probe", "--out", out) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cat, dog" in w and "linear probe" in w for w in warnings), warnings
    probe = dataset_metrics(out)["baselines"]["linear-probe"]
    assert probe["untrained_classes"] == ["cat", "dog"] and probe["accuracy"] == 0.0
    assert run_cli("report", out) == 0
    assert "no training sample of cat, dog" in (out / "report.md").read_text()
