"""The shipped tiny-llava: it loads by its zoo name like any checkpoint, answers embedded test samples, and its
encoder folder is the CLIP model whose vision weights are the LLaVA vision tower."""

import pytest
import torch

from unforget.data import load_dataset
from unforget.evaluation.encoder import ZeroShotClassifier
from unforget.models.loading import load_model
from unforget.models.zoo import ZOO
from unforget.zoo.tiny_llava.check import accepted_answers, encoder_accuracy, normalise_answer, sample_answers

# (dataset, load options, samples asked, at least this many right). The thresholds sit well below the
# model card's accuracies on the same sets (see tiny-llava/README.md), so they only catch a broken model.
CASES = [
    ("digits", {}, 32, 24),  # card: 0.88; chance 0.10
    ("shapes", {}, 48, 9),  # card: 0.26; chance 0.10
    ("colour-shapes", {}, 48, 9),  # card: 0.28; chance 0.016
    ("scenes-vqa", {}, 48, 22),  # card: 0.49
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llava", device="cpu")


def test_zoo_name_resolves_to_the_shipped_folder(tiny):
    assert tiny.family == "llava"
    assert tiny.source == str(ZOO.get("tiny-llava").shipped)
    assert type(tiny.model).__name__ == "LlavaForConditionalGeneration"


@pytest.mark.parametrize("name,options,n,at_least", CASES)
def test_answers_embedded_test_samples(tiny, name, options, n, at_least):
    ds = load_dataset(name, **options)
    samples = ds.split("test")[:n]
    answers = sample_answers(tiny, ds, samples)
    right = sum(normalise_answer(a) in accepted_answers(ds, s) for a, s in zip(answers, samples))
    assert right >= at_least, f"{name}: {right}/{n} right; answers {answers}"


def test_encoder_is_the_clip_model_of_the_vision_tower(tiny):
    from transformers import AutoProcessor, CLIPModel

    folder = ZOO.get("tiny-llava").shipped / "encoder"
    clip = CLIPModel.from_pretrained(folder, use_safetensors=True)
    ours, theirs = clip.vision_model.state_dict(), tiny.model.model.vision_tower.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours)
    # Its tokenizer ends texts with the token the text tower pools at, so plain processor calls work.
    tok = AutoProcessor.from_pretrained(folder).tokenizer
    assert tok("a photo of a 7.")["input_ids"][-1] == clip.config.text_config.eos_token_id


def test_encoder_zero_shot_beats_chance_on_digits():
    folder = ZOO.get("tiny-llava").shipped / "encoder"
    ds = load_dataset("digits")
    accuracy = encoder_accuracy(ZeroShotClassifier(str(folder)), ds, ds.split("test")[:100])
    assert accuracy >= 0.8  # card: 0.94 on 400; chance 0.10


def test_rank_mode_predicts_the_top_ranked_class(tmp_path):
    """In rank mode the prediction is the best-ranked class itself (the letter "A" included, which a text
    normaliser would drop as an article): correct exactly when the reference ranks first."""
    import json

    from unforget.cli import main

    out = tmp_path / "rank"
    assert main(["eval", "--model", "tiny-llava", "--datasets", "letters", "--mode", "rank", "--limit", "60",
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 60
    assert all(r["prediction"] == r["top_k"][0][0] for r in records)
    assert all(r["correct"] == (r["rank_of_reference"] == 0) for r in records)
    assert any(r["prediction"] == "A" for r in records)
