"""The recipe that trains ``tiny-llava`` from the embedded datasets, in LLaVA's stages, on a CPU.

1. **CLIP pre-training** (:mod:`.clip`). A ``CLIPModel`` whose vision config is the LLaVA vision tower's learns
   image-text matching; saved as ``encoder/``, its vision weights become the LLaVA vision tower, which stays frozen
   from then on.
2. **Alignment.** Projector and language model learn to describe images ("Describe the image." -> caption or
   class phrase). The language model starts from scratch, so unlike LLaVA (which freezes a pre-trained LM here) it
   trains too: the projector alone cannot teach a random LM to write.
3. **Instruction tuning.** Projector + LM on a mix of every embedded task with the datasets' own prompt
   templates; answers are the exact class names / short answers / reference captions, loss on the answer only.

Every training example is made by :func:`unforget.training.examples.build_example`, i.e. through the processor and
chat template exactly as at inference; which parts train is set by the fine-tuning methods' ``set_trainable``.
Stages 2 and 3 step with the recipes' own loop (:mod:`unforget.zoo.stages`), not the fine-tuning engine's: the
committed weights came from it. Seeds are fixed; the same seed, thread count and library versions give the same
model. The build ends with :mod:`.check`, whose figures the model card (:mod:`.card`) quotes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from transformers import CLIPProcessor

from ...errors import TrainingError
from ...models.build import build_llava
from ...models.loading import LoadedModel
from ...models.tokenizer import train_tokenizer
from ...runs import atomic_write_json
from ...training.examples import Example, collate_examples
from ...training.methods.base import part_of, set_trainable
from ..data import (
    ALIGN_QUESTION,
    ExampleCache,
    Item,
    RecipeData,
    alignment_item,
    class_phrases,
    describe_objects,
    instruction_item,
    item_stream,
    load_recipe_data,
    preprocess_pixels,
)
from ..stages import StageSettings, stage_optimizer, stage_step
from .card import model_card
from .check import evaluate_folder
from .clip import build_clip, clip_pairs, clip_tokenizer, copy_vision_tower, train_clip, vision_towers_equal
from .config import BuildReport, TinyLlavaRecipe

log = logging.getLogger(__name__)


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


def length_grouped_batches(examples_of: Callable[[Item], Example], items: Iterator[Item], batch_size: int,
                           rng: random.Random, pool_batches: int = 8) -> Iterator[list[Example]]:
    """Batches of similar length (a pool of ``pool_batches`` batches sorted by length, then shuffled): one long
    "Answer with one of: <64 classes>" prompt would otherwise pad the whole batch."""
    while True:
        pool = [examples_of(next(items)) for _ in range(batch_size * pool_batches)]
        pool.sort(key=lambda e: len(e.input_ids))
        batches = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(batches)
        yield from batches


def train_llava_stage(lm: LoadedModel, batches: Iterator[list[Example]], settings: StageSettings,
                      stage: str) -> float:
    """Train the parameters with requires_grad; returns the mean loss of the last 50 steps."""
    model = lm.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = stage_optimizer(params, settings)
    pad = lm.tokenizer.pad_token_id
    losses = []
    for step in range(settings.steps):
        batch = collate_examples(next(batches), pad)
        loss = model(**batch).loss
        stage_step(loss, params, optimizer, schedule, "tiny-llava", stage, step)
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("%s step %d/%d loss %.3f", stage, step, settings.steps, loss.item())
    model.eval()
    return float(np.mean(losses[-50:]))


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


def _build(recipe: TinyLlavaRecipe, out: Path, evaluate: bool) -> BuildReport:
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
    set_trainable(llava, lambda name: part_of(name) in ("projector", "language"))
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
