"""The recipe that trains smol-llava's projector (and a small LoRA) on a CPU, in LLaVA's stages.

0. **Vocabulary alignment.** The projector alone is trained on the frozen DINOv2 tower's cached patch features so
   that every patch lands on the input embedding of the words that name the image (class name, scene objects,
   colour and shape): MSE to that point plus a cross-entropy over the vocabulary by cosine similarity. No LM pass,
   a few minutes on 2 cores. Why: the frozen SmolLM2 reads exact word embeddings put where the image tokens go
   (letters, coloured shapes) and a LoRA learns to read digits from them within a few steps, while a projector
   trained only through the LM's loss for a CPU budget of a few hundred steps left digits, letters and coloured
   shapes at chance.
1. **Alignment.** Projector only (language model frozen, as LLaVA), a short low-lr stage: "Describe the image."
   -> the description.
2. **Instruction tuning.** Projector + a LoRA on every linear layer of the LM: every embedded task with its own
   prompt templates (the sets with many classes, and the digits, drawn twice as often), mixed with text-only
   instruction data (the "text" set's train prompts, answered by the base SmolLM2 itself: self-distillation, so
   that it still chats the way it did).

Seeds are fixed; the same seed, thread count and library versions give the same weights. Only the projector and the
adapter are written (``projector.safetensors``, ``adapter/``), with ``smol_llava.json`` and the model card.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ...errors import TrainingError
from ...runs import atomic_write_json
from ..loading import LoadedModel
from .smol_llava_assembly import AssemblySpec, save_trained_parts, spec_dict
from .tiny_llava_recipe import (
    EMBEDDED_SETS,
    ExampleCache,
    Item,
    RecipeData,
    StageSettings,
    _easy_vqa_descriptions,
    alignment_item,
    describe_objects,
    instruction_item,
    item_stream,
    load_recipe_data,
    preprocess_pixels,
)

log = logging.getLogger(__name__)


@dataclass
class VocabularySettings:
    """Stage 0, the projector onto the words that name each image (no LM pass)."""

    steps: int = 1500
    lr: float = 1e-3
    batch_size: int = 32
    temperature: float = 0.05
    ce_weight: float = 1.0
    negatives_from: int = 1000  # a block of ordinary tokens kept away from every image
    negatives: int = 4000


@dataclass
class SmolLlavaRecipe:
    """Everything that decides the trained parts; stored in ``smol_llava.json``."""

    seed: int = 0
    datasets: tuple[str, ...] = EMBEDDED_SETS
    train_per_set: int = 600
    spec: AssemblySpec = field(default_factory=lambda: AssemblySpec(image_size=84))
    vocabulary: VocabularySettings = field(default_factory=lambda: VocabularySettings())
    align: StageSettings = field(default_factory=lambda: StageSettings(steps=40, lr=2e-4, batch_size=8,
                                                                       weight_decay=0.0))
    instruct: StageSettings = field(default_factory=lambda: StageSettings(steps=300, lr=5e-4, batch_size=8,
                                                                          weight_decay=0.0))
    # instruction batches drawn per set by these weights (1 for a set not named): the sets with many classes and
    # the digits, which the frozen LM cannot read even from exact word embeddings, get more of the budget
    instruct_weights: dict[str, float] = field(default_factory=lambda: {
        "digits": 2.0, "mnist": 2.0, "letters": 2.0, "colour-shapes": 2.0, "scenes-caption": 0.5})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    text_fraction: float = 0.15  # share of instruction batches that are text-only
    text_max_new_tokens: int = 16  # self-distilled answers and the build-time text check
    threads: int = 2
    eval_limit: int = 50  # test samples per set in the build-time check (rank mode)
    # the base SmolLM2's text accuracy is measured by the build unless given (it does not depend on the recipe:
    # greedy answers of the unchanged language model; measuring it costs ~10 min on a busy 2-core machine)
    base_text_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["spec"] = spec_dict(self.spec)
        return out


@dataclass
class SmolBuildReport:
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    vocabulary: dict[str, float] = field(default_factory=dict)  # stage 0: final losses, patch-to-words cosine
    parameters: dict[str, int] = field(default_factory=dict)
    rank_accuracy: dict[str, float] = field(default_factory=dict)  # embedded sets, rank mode
    eval_counts: dict[str, int] = field(default_factory=dict)
    text_accuracy: dict[str, float] = field(default_factory=dict)  # "base" (SmolLM2 alone) and "smol-llava"
    forward_seconds: dict[str, float] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None  # the whole recipe, start to end
    notes: list[str] = field(default_factory=list)  # circumstances of the run the figures depend on


# ---------------------------------------------------------------------------------------------- stage 0


@torch.no_grad()
def patch_features(llava: Any, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The vision features the projector sees (the configured layer, CLS dropped): (n, patches, hidden)."""
    layer = llava.config.vision_feature_layer
    out = []
    for i in range(0, len(pixels), batch):
        hidden = llava.model.vision_tower(pixels[i : i + batch], output_hidden_states=True).hidden_states[layer]
        out.append(hidden[:, 1:])
    return torch.cat(out)


# words that name nothing in the image: left out of the vocabulary-alignment targets
_FUNCTION_WORDS = frozenset("a an the at in on of is are and there image picture shape shapes with".split())


def vocabulary_text(ds: Any, sample: Any, easy_vqa: dict[Any, str]) -> str | None:
    """The words stage 0 maps an image onto: the class name, or the content words of the scene description
    (objects) / of the colour-and-shape description (easy-VQA); None when the sample names nothing."""
    if ds.task == "classification" and sample.label is not None:
        text = ds.class_names[sample.label]
    elif "objects" in sample.meta:
        text = describe_objects(sample.meta["objects"])
    elif sample.meta.get("image_id") in easy_vqa:
        text = easy_vqa[sample.meta["image_id"]]
    else:
        return None
    words = [w for w in text.replace(",", " ").split() if w.lower() not in _FUNCTION_WORDS]
    return " " + " ".join(words) if words else None


def vocabulary_alignment(llava: Any, features: torch.Tensor, targets: Sequence[Sequence[int]],
                         settings: VocabularySettings, seed: int) -> dict[str, float]:
    """Stage 0: train the projector so that every patch of an image lands on the input embedding of the words
    that name it (the mean of their token embeddings): MSE to that point, plus a cross-entropy over the
    vocabulary by cosine similarity that keeps the other classes' words away. Runs on the frozen tower's cached
    patch features, with no language-model pass: a few minutes on 2 cores. Returns the final losses and the mean
    cosine similarity of the projected patches to their target (the fidelity a frozen LM needs to read them)."""
    emb = llava.get_input_embeddings().weight.detach()
    proj = llava.model.multi_modal_projector
    negatives = range(settings.negatives_from, settings.negatives_from + settings.negatives)
    vocab = sorted({i for ids in targets for i in ids} | set(negatives))
    column = {v: k for k, v in enumerate(vocab)}
    unit = torch.nn.functional.normalize(emb[vocab], dim=-1)
    soft = torch.zeros(len(targets), len(vocab))
    for n, ids in enumerate(targets):
        for i in ids:
            soft[n, column[i]] += 1.0 / len(ids)
    point = torch.stack([emb[list(ids)].mean(0) for ids in targets])  # (n, D)
    scale = float(point.norm(dim=-1).mean())
    gen = torch.Generator().manual_seed(seed)
    proj.requires_grad_(True)
    optimizer = torch.optim.AdamW(proj.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=settings.steps,
                                                   pct_start=0.05)
    mse = ce = torch.tensor(float("nan"))
    for step in range(settings.steps):
        batch = torch.randint(len(features), (settings.batch_size,), generator=gen)
        out = proj(features[batch])  # (b, p, D)
        mse = ((out - point[batch, None]) ** 2).sum(-1).mean() / scale**2
        logits = torch.nn.functional.normalize(out, dim=-1) @ unit.T / settings.temperature
        ce = -(soft[batch, None] * logits.log_softmax(-1)).sum(-1).mean()
        loss = mse + settings.ce_weight * ce
        if not torch.isfinite(loss):
            raise TrainingError(f"smol-llava recipe, stage 0: the loss became {loss.item()} at step {step}; "
                                "lower vocabulary.lr")
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == settings.steps - 1:
            log.info("vocabulary step %d/%d mse %.3f ce %.3f", step, settings.steps, mse.item(), ce.item())
    proj.requires_grad_(False)
    with torch.no_grad():
        cos = []
        for i in range(0, len(features), 256):
            out = proj(features[i : i + 256])
            cos.append(torch.nn.functional.cosine_similarity(out, point[i : i + 256, None], dim=-1).mean(1))
    return {"mse": mse.item(), "ce": ce.item(), "cosine": float(torch.cat(cos).mean())}


def vocabulary_data(llava: Any, tokenizer: Any, data: RecipeData) -> tuple[torch.Tensor, list[list[int]]]:
    """Patch features of every train image that names something, with the token ids of those words."""
    feats, targets = [], []
    for name in sorted(data.train):
        ds, samples = data.sets[name], data.train[name]
        easy = _easy_vqa_descriptions(ds.split("train")) if name == "easy-vqa" else {}
        keep, ids = [], []
        for i, sample in enumerate(samples):
            text = vocabulary_text(ds, sample, easy)
            if text is not None:
                keep.append(i)
                ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        if keep:
            feats.append(patch_features(llava, data.pixels[name][keep]))
            targets += ids
    return torch.cat(feats), targets


# ---------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TextItem:
    question: str
    answer: str


def text_instructions(lm: LoadedModel, seed: int, max_new_tokens: int) -> list[TextItem]:
    """The "text" set's train prompts answered by the base model (its answer when it names an accepted one or
    when none is given, else the first accepted answer as a sentence)."""
    from ...data import load_dataset
    from ...evaluation.generation import GenerationRequest, generate_answers
    from ...evaluation.judges.base import normalise

    ds = load_dataset("text")
    samples = ds.split("train")
    answers = generate_answers(lm, [GenerationRequest(s.question, None) for s in samples], batch_size=8,
                               max_new_tokens=max_new_tokens)
    items = []
    for s, a in zip(samples, answers):
        accepted = s.meta["accepted"]
        ok = not accepted or any(f" {normalise(x)} " in f" {normalise(a)} " for x in accepted)
        items.append(TextItem(s.question, a if ok and a else f"{accepted[0]}."))
    return items


def mixed_batches(cache: ExampleCache, lm: LoadedModel, items: Iterator[Item], texts: Sequence[TextItem],
                  settings: StageSettings, text_fraction: float, rng: random.Random) -> Iterator[list[Any]]:
    """Batches of image examples, a ``text_fraction`` of them text-only (a batch never mixes the two)."""
    from ...training.examples import build_example

    text_examples: dict[int, Any] = {}
    while True:
        if texts and rng.random() < text_fraction:
            picks = [rng.randrange(len(texts)) for _ in range(settings.batch_size)]
            for i in picks:
                if i not in text_examples:
                    text_examples[i] = build_example(lm, None, texts[i].question, texts[i].answer)
            yield [text_examples[i] for i in picks]
        else:
            yield [cache.example(next(items)) for _ in range(settings.batch_size)]


def train_stage(lm: LoadedModel, batches: Iterator[list[Any]], settings: StageSettings, stage: str,
                report: SmolBuildReport) -> None:
    from ...training.examples import collate_examples
    from ...training.loss import AnswerLoss
    from .tiny_llava_recipe import _optimizer, _step

    model = lm.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = _optimizer(params, settings)
    loss_fn = AnswerLoss(model)
    losses, t0 = [], time.perf_counter()
    for step in range(settings.steps):
        batch = collate_examples(next(batches), lm.tokenizer.pad_token_id)
        loss, _ = loss_fn(model, batch)
        _step(loss, params, optimizer, schedule, stage, step)
        losses.append(loss.item())
        if step % 5 == 0 or step == settings.steps - 1:
            log.info("%s step %d/%d loss %.3f (%.1f s/step)", stage, step, settings.steps, loss.item(),
                     (time.perf_counter() - t0) / (step + 1))
    model.eval()
    report.final_loss[stage] = float(np.mean(losses[-10:])) if losses else float("nan")
    report.seconds_per_step[stage] = (time.perf_counter() - t0) / max(1, settings.steps)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_model(lm: LoadedModel, sets: Sequence[str], limit: int, report: SmolBuildReport,
                   key: str = "smol-llava", max_new_tokens: int = 16) -> None:
    """Rank-mode accuracy per embedded set (captions: skipped) and generate + exact accuracy on "text"."""
    from ...evaluation.config import EvalConfig
    from ...evaluation.evaluator import evaluate

    for name in sets:
        from ...data import load_dataset

        if load_dataset(name).task == "caption":
            continue
        result = evaluate(EvalConfig(datasets=[name], mode="rank", limit=limit, batch_size=8), lm=lm)
        report.rank_accuracy[name] = result.accuracy(name)
        report.eval_counts[name] = min(limit, len(load_dataset(name).split("test")))
        log.info("%s rank accuracy %.3f", name, report.rank_accuracy[name])
    result = evaluate(EvalConfig(datasets=["text"], mode="generate", batch_size=8, max_new_tokens=max_new_tokens),
                      lm=lm)
    report.text_accuracy[key] = result.accuracy("text")


@torch.no_grad()
def forward_seconds(lm: LoadedModel, repeats: int = 3) -> float:
    """Seconds of one forward pass of one image + question (median of ``repeats``)."""
    from PIL import Image

    from ..prompting import build_prompt, encode_batch

    image = Image.new("RGB", (64, 64), (200, 30, 30))
    enc = encode_batch(lm, [image], [build_prompt(lm, "What is the number in the image?")])
    lm.model(**enc)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        lm.model(**enc)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------- the build


def train_smol_llava(out_dir: str | Path, seed: int = 0, *, recipe: SmolLlavaRecipe | None = None,
                     evaluate: bool = True, **overrides: Any) -> Path:
    """Run the recipe; write the trained parts, ``smol_llava.json`` and the model card to ``out_dir``."""
    recipe = dataclasses.replace(recipe or SmolLlavaRecipe(), seed=seed, **overrides)
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    try:
        report = _train(recipe, out, evaluate)
    finally:
        torch.set_num_threads(old_threads)
    report.wall_seconds = time.perf_counter() - t0
    atomic_write_json(out / "smol_llava.json", {"spec": spec_dict(recipe.spec), "recipe": recipe.to_dict(),
                                                "report": dataclasses.asdict(report)})
    from .smol_llava_card import model_card

    (out / "README.md").write_text(model_card(recipe.to_dict(), dataclasses.asdict(report)))
    return out


def _train(recipe: SmolLlavaRecipe, out: Path, evaluate: bool) -> SmolBuildReport:
    from peft import LoraConfig, get_peft_model

    from .smol_llava import load_parts
    from .smol_llava_assembly import assemble_llava

    report = SmolBuildReport()
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    t0 = time.perf_counter()
    language_model, tokenizer, vision, provenance = load_parts()
    report.conversion = provenance
    llava, processor = assemble_llava(language_model, tokenizer, vision, recipe.spec, seed=recipe.seed)
    del language_model
    llava.requires_grad_(False)
    lm = LoadedModel(model=llava, processor=processor, family="llava", source=str(out))
    data: RecipeData = load_recipe_data(recipe.datasets, recipe.train_per_set, recipe.seed)
    preprocess_pixels(data, processor.image_processor)
    report.seconds["data"] = time.perf_counter() - t0
    base_key = "SmolLM2-135M-Instruct alone (base)"
    if recipe.base_text_accuracy is not None:
        report.text_accuracy[base_key] = recipe.base_text_accuracy
    elif evaluate:
        t0 = time.perf_counter()
        from ...evaluation.config import EvalConfig
        from ...evaluation.evaluator import evaluate as run_eval

        base = run_eval(EvalConfig(datasets=["text"], mode="generate", batch_size=8,
                                   max_new_tokens=recipe.text_max_new_tokens), lm=lm)
        report.text_accuracy[base_key] = base.accuracy("text")
        report.seconds["base_text_eval"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts = text_instructions(lm, recipe.seed, recipe.text_max_new_tokens)
    report.seconds["text_answers"] = time.perf_counter() - t0
    log.info("data, parts and %d self-distilled text answers ready", len(texts))

    # Stage 0: the projector onto the words that name each image
    t0 = time.perf_counter()
    feats, target_ids = vocabulary_data(llava, tokenizer, data)
    report.vocabulary = vocabulary_alignment(llava, feats, target_ids, recipe.vocabulary, recipe.seed)
    report.vocabulary["images"] = float(len(target_ids))
    del feats
    report.seconds["vocabulary"] = time.perf_counter() - t0
    log.info("stage 0: %d images, patch-to-words cosine %.3f", len(target_ids), report.vocabulary["cosine"])

    # Stage 1: alignment, projector only
    cache = ExampleCache(lm, data)
    llava.model.multi_modal_projector.requires_grad_(True)
    t0 = time.perf_counter()
    rng = random.Random(f"{recipe.seed}-align")
    torch.manual_seed(recipe.seed)
    items = item_stream(data, alignment_item, {}, rng)
    batches = mixed_batches(cache, lm, items, [], recipe.align, 0.0, rng)
    train_stage(lm, batches, recipe.align, "align", report)
    report.seconds["align"] = time.perf_counter() - t0

    # Stage 2: instruction tuning, projector + LoRA, with text-only self-distillation batches
    t0 = time.perf_counter()
    peft_model = get_peft_model(llava, LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
                                                  target_modules=recipe.lora_targets))
    llava.model.multi_modal_projector.requires_grad_(True)
    plm = dataclasses.replace(lm, model=peft_model)
    rng = random.Random(f"{recipe.seed}-instruct")
    torch.manual_seed(recipe.seed)
    items = item_stream(data, instruction_item, recipe.instruct_weights, rng)
    batches = mixed_batches(ExampleCache(plm, data), plm, items, texts, recipe.instruct, recipe.text_fraction, rng)
    train_stage(plm, batches, recipe.instruct, "instruct", report)
    report.seconds["instruct"] = time.perf_counter() - t0
    save_trained_parts(out, llava, peft_model)
    report.parameters = {
        "projector": sum(p.numel() for p in llava.model.multi_modal_projector.parameters()),
        "lora": sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n),
        "total": sum(p.numel() for p in llava.parameters() if True),
    }
    merged = peft_model.merge_and_unload().eval()
    lm = dataclasses.replace(lm, model=merged)
    if evaluate:
        t0 = time.perf_counter()
        report.forward_seconds[f"{recipe.spec.image_size}px"] = forward_seconds(lm)
        evaluate_model(lm, recipe.datasets, recipe.eval_limit, report, max_new_tokens=recipe.text_max_new_tokens)
        report.seconds["evaluate"] = time.perf_counter() - t0
    return report
