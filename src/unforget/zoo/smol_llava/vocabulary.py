"""Stage 0 of the smol-llava recipe: vocabulary alignment of the projector.

The projector alone is trained on the frozen DINOv2 tower's cached patch features so that every patch lands on the
input embedding of the words that name the image (class name, scene objects, colour and shape): MSE to that point
plus a cross-entropy over the vocabulary by cosine similarity. No LM pass, a few minutes on 2 cores. Why: the frozen
SmolLM2 reads exact word embeddings put where the image tokens go (letters, coloured shapes) and a LoRA learns to
read digits from them within a few steps, while a projector trained only through the LM's loss for a CPU budget of a
few hundred steps left digits, letters and coloured shapes at chance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...errors import TrainingError
from ..data import RecipeData, describe_objects, easy_vqa_descriptions

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
        easy = easy_vqa_descriptions(ds.split("train")) if name == "easy-vqa" else {}
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
