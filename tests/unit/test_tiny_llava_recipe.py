"""The tiny-llava recipe: its pieces on hand-made inputs, and every stage end to end at a toy size."""

import json
import math
import random

import pytest
import torch

from unforget.data import ImageDataset, Sample
from unforget.models.build import LlavaShape
from unforget.zoo.data import ALIGN_QUESTION, alignment_item, class_phrases, describe_objects, instruction_item
from unforget.zoo.stages import StageSettings
from unforget.zoo.tiny_llava.check import accepted_answers, eval_question, normalise_answer
from unforget.zoo.tiny_llava.clip import clip_tokenizer, multi_positive_clip_loss
from unforget.zoo.tiny_llava.config import TinyLlavaRecipe
from unforget.zoo.tiny_llava.recipe import build_tiny_llava


def test_normalise_answer():
    assert normalise_answer("  Red Circle. ") == "red circle"
    assert normalise_answer("a  red\tstar!") == "a red star"
    assert normalise_answer("7") == "7"


def test_clip_loss_distinct_concepts_is_clip_cross_entropy():
    emb = torch.eye(2)
    scale = torch.tensor(math.log(2.0))  # logits 2 on the diagonal, 0 off it
    loss = multi_positive_clip_loss(emb, emb, ["a", "b"], scale)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-5)


def test_clip_loss_same_concept_pairs_are_positives():
    # Two images of the same concept with identical embeddings: both texts are right answers, so the
    # target is (1/2, 1/2) and the loss is log 2 whatever the scale.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = multi_positive_clip_loss(emb, emb, ["seven", "seven"], torch.tensor(2.0))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_describe_objects_reading_order():
    objects = [
        {"shape": "star", "colour": "red", "position": "bottom right"},
        {"shape": "circle", "colour": "orange", "position": "top left"},
    ]
    assert describe_objects(objects) == "an orange circle at the top left, a red star at the bottom right"


def test_class_phrases_include_generic_zero_shot_forms():
    phrases = class_phrases("digits", "7")
    assert phrases[0] == "the digit 7"
    assert "a photo of a 7." in phrases and "7" in phrases


def _classification_set() -> ImageDataset:
    return ImageDataset(
        name="toy", task="classification",
        splits={"train": [Sample(id="0", image=None, label=1)], "test": []},
        class_names=["cat", "dog"], templates=["What is it?", "What is it? Answer with one of: {classes}."],
    )


def test_items_use_class_names_and_templates():
    ds = _classification_set()
    sample = ds.split("train")[0]
    rng = random.Random(0)
    questions = {instruction_item(ds, sample, 0, rng).question for _ in range(30)}
    assert questions == {"What is it?", "What is it? Answer with one of: cat, dog."}
    assert instruction_item(ds, sample, 0, rng).answer == "dog"
    align = alignment_item(ds, sample, 0, rng)
    assert (align.question, align.answer) == (ALIGN_QUESTION, "a photo of a dog.")  # no set-specific phrase
    assert eval_question(ds, sample) == "What is it?"


def test_vqa_and_caption_items():
    vqa = ImageDataset(name="v", task="vqa", splits={"train": [Sample(id="0", question="What colour?", answer="red")]},
                       class_names=["blue", "red"], templates=["Answer with one word.", "One of: {classes}."])
    sample = vqa.split("train")[0]
    rng = random.Random(1)
    questions = {instruction_item(vqa, sample, 0, rng).question for _ in range(40)}
    assert questions == {"What colour?", "What colour? Answer with one word.", "What colour? One of: blue, red."}
    assert eval_question(vqa, sample) == "What colour? Answer with one word."

    cap = ImageDataset(name="c", task="caption", templates=["Describe."],
                       splits={"train": [Sample(id="0", answer="a red star", meta={"captions": ["a red star",
                                                                                              "one red star"]})]})
    s = cap.split("train")[0]
    assert instruction_item(cap, s, 0, rng).answer == "a red star"
    assert accepted_answers(cap, s) == {"a red star", "one red star"}


def test_clip_tokenizer_ends_texts_with_the_pooling_token():
    from unforget.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["a photo of the digit 7", "a red star"] * 5, vocab_size=300)
    clip_tok = clip_tokenizer(tok)
    ids = clip_tok(["a red star", "7"], padding=True)["input_ids"]
    assert ids[0][-1] == tok.eos_token_id
    assert tok.eos_token_id in ids[1] and ids[1][-1] == tok.pad_token_id  # shorter text: end token, then padding
    assert clip_tok("a red star", add_special_tokens=False)["input_ids"] == tok("a red star")["input_ids"]


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    shape = LlavaShape(vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64, text_hidden=32,
                       text_layers=1, text_heads=2, text_kv_heads=2, text_intermediate=64, projection_dim=16)
    recipe = TinyLlavaRecipe(
        datasets=("digits",), train_per_set=48, vocab_size=300, shape=shape, clip_text_hidden=32, clip_text_layers=1,
        clip_text_heads=2, clip_text_intermediate=64,
        clip=StageSettings(steps=3, lr=1e-3, batch_size=16), align=StageSettings(steps=2, lr=1e-3, batch_size=4),
        instruct=StageSettings(steps=2, lr=1e-3, batch_size=4), eval_limit=8,
    )
    return build_tiny_llava(out, seed=0, recipe=recipe)


def test_toy_build_writes_a_loadable_model_and_encoder(toy_build):
    from transformers import CLIPModel

    from unforget.models.loading import load_model

    assert (toy_build / "config.json").is_file() and (toy_build / "model.safetensors").is_file()
    lm = load_model(str(toy_build), device="cpu")
    assert lm.family == "llava"
    clip = CLIPModel.from_pretrained(toy_build / "encoder", use_safetensors=True)
    ours, theirs = clip.vision_model.state_dict(), lm.model.model.vision_tower.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_toy_build_records_recipe_and_measurements(toy_build):
    record = json.loads((toy_build / "recipe.json").read_text())
    assert record["recipe"]["clip"]["steps"] == 3 and record["recipe"]["seed"] == 0
    report = record["report"]
    assert set(report["seconds"]) >= {"data", "clip", "align", "instruct", "evaluate"}
    assert report["eval_counts"] == {"digits": 8}
    assert 0.0 <= report["accuracy"]["digits"] <= 1.0 and 0.0 <= report["zero_shot"]["digits"] <= 1.0
    assert report["parameters"]["llava_total"] == sum(
        report["parameters"][k] for k in ("vision_tower", "projector", "language_model"))


def test_toy_build_is_reproducible(toy_build, tmp_path):
    from safetensors.torch import load_file

    recipe = TinyLlavaRecipe.from_dict(json.loads((toy_build / "recipe.json").read_text())["recipe"])
    again = build_tiny_llava(tmp_path / "again", seed=0, recipe=recipe, evaluate=False)
    first, second = load_file(toy_build / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_example_cache_matches_build_example():
    import numpy as np

    from unforget.models.build import build_llava
    from unforget.models.loading import LoadedModel
    from unforget.models.tokenizer import train_tokenizer
    from unforget.zoo.data import ExampleCache, Item, RecipeData, preprocess_pixels
    from unforget.training.examples import build_example

    rng = np.random.default_rng(0)
    ds = _classification_set()
    ds.splits["train"] = [Sample(id=str(i), image=rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), label=i % 2)
                          for i in range(3)]
    tok = train_tokenizer(["What is it? cat dog"] * 5, vocab_size=300)
    model, processor = build_llava(tok, LlavaShape(vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1))
    lm = LoadedModel(model=model, processor=processor, family="llava", source="test")
    data = RecipeData(sets={"toy": ds}, train={"toy": ds.split("train")})
    preprocess_pixels(data, processor.image_processor)
    cached = ExampleCache(lm, data).example(Item("toy", 2, "What is it?", "cat"))
    direct = build_example(lm, ds.split("train")[2].load_image(), "What is it?", "cat")
    assert torch.equal(cached.input_ids, direct.input_ids) and torch.equal(cached.labels, direct.labels)
    assert torch.allclose(cached.pixel_values, direct.pixel_values, atol=1e-6)
