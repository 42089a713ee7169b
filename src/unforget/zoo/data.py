"""What the zoo recipes train on: the embedded datasets' train samples, preprocessed once, turned into instruction
items (which image, which question, which answer) and encoded as the library's training examples.

Shared by the tiny-llava and smol-llava recipes. Every example is made by
:func:`unforget.training.examples.build_example`, i.e. through the processor and chat template exactly as at
inference.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..data import ImageDataset, Sample, load_dataset
from ..models.loading import LoadedModel
from ..training.examples import Example, build_example

EMBEDDED_SETS: tuple[str, ...] = (
    "digits", "shapes", "letters", "colour-shapes", "scenes-vqa", "scenes-caption", "easy-vqa", "mnist",
)
ALIGN_QUESTION = "Describe the image."

# CLIP text phrasings per class-name set: the generic open_clip-style forms (what a zero-shot evaluator asks with:
# evaluation.encoder's DEFAULT_TEMPLATES) and a few that say what kind of thing the class is. Training texts: they
# decide the model, so they are written out here rather than taken from the evaluator.
GENERIC_CLIP_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "an image of {}.", "a picture of the {}.", "{}")
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "digits": ("the digit {}", "a handwritten {}", "the number {}"),
    "mnist": ("the digit {}", "a handwritten {}", "the number {}"),
    "letters": ("the letter {}", "a capital {}", "the letter {} in the image"),
    "shapes": ("a {}", "a {} shape", "a {} in the image"),
    "colour-shapes": ("a {}", "a {} shape", "a {} in the image"),
}


@dataclass
class RecipeData:
    """The loaded datasets, the train samples the recipe uses and their preprocessed pixels."""

    sets: dict[str, ImageDataset]
    train: dict[str, list[Sample]]
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)  # per set: (n_train, C, H, W), processor output


def load_recipe_data(names: Sequence[str], train_per_set: int | None, seed: int) -> RecipeData:
    sets, train = {}, {}
    for name in names:
        ds = load_dataset(name)
        samples = ds.split("train")
        if train_per_set is not None and len(samples) > train_per_set:
            rng = np.random.default_rng([seed, len(name)])
            keep = np.sort(rng.choice(len(samples), train_per_set, replace=False))
            samples = [samples[i] for i in keep]
        sets[name], train[name] = ds, samples
    return RecipeData(sets=sets, train=train)


def preprocess_pixels(data: RecipeData, image_processor: Any, chunk: int = 256) -> None:
    """Run the image processor once over every train image (the vision tower is frozen after stage 1)."""
    for name, samples in data.train.items():
        parts = []
        for i in range(0, len(samples), chunk):
            images = [s.load_image(name) for s in samples[i : i + chunk]]
            parts.append(image_processor(images, return_tensors="pt")["pixel_values"])
        data.pixels[name] = torch.cat(parts)


def class_phrases(ds_name: str, class_name: str) -> list[str]:
    phrases = CLASS_PHRASES.get(ds_name, ())
    return [t.format(class_name) for t in (*phrases, *GENERIC_CLIP_TEMPLATES)]


def describe_objects(objects: Sequence[dict[str, str]]) -> str:
    """A scene description from its objects' metadata, in reading order: "a red star at the top left, ..."."""
    order = {"top left": 0, "top right": 1, "bottom left": 2, "bottom right": 3}
    parts = []
    for obj in sorted(objects, key=lambda o: order.get(o["position"], 4)):
        phrase = f"{obj['colour']} {obj['shape']}"
        parts.append(f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase} at the {obj['position']}")
    return ", ".join(parts)


def easy_vqa_descriptions(samples: Sequence[Sample]) -> dict[Any, str]:
    """easy-VQA asks several questions per image: gather its colour and shape answers into one description."""
    colour: dict[Any, str] = {}
    shape: dict[Any, str] = {}
    for s in samples:
        key = s.meta.get("image_id")
        if s.meta.get("qtype") == "colour":
            colour[key] = s.answer or ""
        elif s.meta.get("qtype") == "shape":
            shape[key] = s.answer or ""
    out = {}
    for key in set(colour) | set(shape):
        c, sh = colour.get(key), shape.get(key)
        out[key] = f"a {c} {sh}" if c and sh else (f"a {c} shape" if c else f"a {sh}")
    return out


@dataclass(frozen=True)
class Item:
    """One instruction sample before encoding: which train image, the question, the answer."""

    dataset: str
    index: int
    question: str
    answer: str


def alignment_item(ds: ImageDataset, sample: Sample, index: int, rng: random.Random) -> Item:
    """The alignment stage: "Describe the image." -> a caption, a scene description or a class phrase."""
    if ds.task == "caption":
        answer = ds.reference(sample)
    elif "objects" in sample.meta:
        answer = describe_objects(sample.meta["objects"])
    elif ds.task == "classification" and sample.label is not None:
        answer = class_phrases(ds.name, ds.class_names[sample.label])[0]
    else:  # easy-VQA: its question and answer are the best description it has
        answer = f"{sample.question} {sample.answer}"
    return Item(ds.name, index, ALIGN_QUESTION, answer)


def instruction_item(ds: ImageDataset, sample: Sample, index: int, rng: random.Random) -> Item:
    """Instruction tuning: the dataset's own prompts; classification answers are exact class names, VQA answers the
    short answer (asked bare or with one of the set's answer-format instructions appended), captions the
    reference."""
    if ds.task == "classification":
        question = ds.question_for(sample, rng.randrange(len(ds.templates)) if ds.templates else 0)
    elif ds.task == "caption":
        question = rng.choice(ds.templates) if ds.templates else ALIGN_QUESTION
    else:
        question = vqa_question(ds, sample, rng.randrange(len(ds.templates) + 1) - 1)
    return Item(ds.name, index, question, ds.reference(sample))


def vqa_question(ds: ImageDataset, sample: Sample, template: int = -1) -> str:
    """The sample's question, with answer-format instruction ``template`` appended (-1: the bare question)."""
    question = ds.question_for(sample)
    if template < 0 or not ds.templates:
        return question
    suffix = ds.templates[template].format(classes=", ".join(ds.class_names), n=len(ds.class_names))
    return f"{question} {suffix}"


class ExampleCache:
    """Builds training examples with :func:`build_example`, but runs the image processor once per image (the
    pixels were preprocessed) and tokenises each distinct (question, answer) text once: on 2 cores the processor
    call costs as much as a training step of this model."""

    def __init__(self, lm: LoadedModel, data: RecipeData):
        self.lm = lm
        self.data = data
        size = data.pixels[next(iter(data.pixels))].shape[-1]
        self._blank = Image.new("RGB", (size, size))
        self._text: dict[tuple[str, str], Example] = {}

    def example(self, item: Item) -> Example:
        key = (item.question, item.answer)
        template = self._text.get(key)
        if template is None:
            template = self._text[key] = build_example(self.lm, self._blank, item.question, item.answer)
        pixels = self.data.pixels[item.dataset][item.index]
        return dataclasses.replace(template, pixel_values=pixels.reshape(template.pixel_values.shape))


def item_stream(data: RecipeData, make: Callable[[ImageDataset, Sample, int, random.Random], Item],
                weights: dict[str, float], rng: random.Random) -> Iterator[Item]:
    """Endless items: a set drawn by weight, then one of its train samples at random."""
    names = sorted(data.train)
    w = [weights.get(n, 1.0) for n in names]
    while True:
        name = rng.choices(names, weights=w)[0]
        index = rng.randrange(len(data.train[name]))
        yield make(data.sets[name], data.train[name][index], index, rng)
