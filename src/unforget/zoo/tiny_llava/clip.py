"""Stage 1 of the tiny-llava recipe: CLIP pre-training of the vision tower.

A ``CLIPModel`` whose vision config is the LLaVA vision tower's, with a small text tower on the model's own
tokenizer, learns image-text matching on (image, text) pairs: class-name phrases ("the digit 7", "a photo of a red
star."), scene captions and descriptions. Saved as ``encoder/`` (a zero-shot classifier in its own right); its
vision weights become the LLaVA vision tower, which stays frozen from then on.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tokenizers.processors import TemplateProcessing
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, PreTrainedTokenizerFast

from ..data import RecipeData, class_phrases, describe_objects, easy_vqa_descriptions
from ..stages import StageSettings, stage_optimizer, stage_step
from .config import TinyLlavaRecipe

log = logging.getLogger(__name__)

# Class-name sets that name the same concepts (a "7" from digits is a "7" from mnist).
CONCEPT_GROUPS: dict[str, str] = {"digits": "digit", "mnist": "digit"}


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
        easy = easy_vqa_descriptions(samples) if name == "easy-vqa" else {}
        seen_images: set[Any] = set()
        for i, s in enumerate(samples):
            if ds.task == "classification" and s.label is not None:
                cls = ds.class_names[s.label]
                concept = f"{CONCEPT_GROUPS.get(name, name)}:{cls}"
                pairs.append(ClipPair(name, i, tuple(class_phrases(name, cls)), concept))
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


def clip_tokenizer(tokenizer: Any) -> Any:
    """The LLaVA tokenizer (same vocabulary and merges) that ends every text with the end token, where CLIP's
    text tower pools."""
    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    eos = tokenizer.eos_token
    backend.post_processor = TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.eos_token_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=tokenizer.bos_token, eos_token=eos, pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token, model_max_length=64,
    )


def build_clip(recipe: TinyLlavaRecipe, llava_config: Any, tokenizer: Any) -> Any:
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
    optimizer, schedule = stage_optimizer(params, settings)
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
        stage_step(loss, params, optimizer, schedule, "tiny-llava", "clip", step)
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
