"""Stage 0 of the smol-llava recipe: the projector learns to put every patch of an image onto the input embedding of
the words that name it, from cached tower features alone (tiny stand-in parts, no package needed)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import stand_in_parts
from unforget.data import load_dataset
from unforget.models.zoo.smol_llava_assembly import AssemblySpec, assemble_llava
from unforget.zoo.data import easy_vqa_descriptions as _easy_vqa_descriptions
from unforget.zoo.smol_llava.vocabulary import VocabularySettings, vocabulary_alignment, vocabulary_text


def test_the_words_that_name_an_image_leave_out_function_words():
    digits = load_dataset("digits")
    sample = digits.split("train")[0]
    assert vocabulary_text(digits, sample, {}) == " " + digits.class_names[sample.label]
    scenes = load_dataset("scenes-vqa")
    scene = scenes.split("train")[0]
    words = vocabulary_text(scenes, scene, {}).split()
    assert words and not {"a", "an", "the", "at"} & set(words)
    assert {o["colour"] for o in scene.meta["objects"]} <= set(words)
    easy = load_dataset("easy-vqa")
    train = easy.split("train")
    described = _easy_vqa_descriptions(train)
    sample = next(s for s in train if s.meta.get("image_id") in described)
    text = vocabulary_text(easy, sample, described)
    assert text.split() == [w for w in described[sample.meta["image_id"]].split() if w not in ("a", "shape")]
    assert vocabulary_text(easy, sample, {}) is None  # an image nothing describes is left out


@pytest.mark.usefixtures("one_thread")
def test_patches_land_on_the_embedding_of_their_own_words():
    lm, tokenizer, vision = stand_in_parts()
    llava, _ = assemble_llava(lm, tokenizer, vision, AssemblySpec(image_size=56), seed=0)
    llava.requires_grad_(False)
    words = [tokenizer(" red", add_special_tokens=False)["input_ids"],
             tokenizer(" digit", add_special_tokens=False)["input_ids"]]
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 24, generator=gen) * 2
    labels = torch.arange(64) % 2
    features = centres[labels][:, None, :] + 0.3 * torch.randn(64, 16, 24, generator=gen)
    targets = [words[int(k)] for k in labels]
    emb = llava.get_input_embeddings().weight
    point = torch.stack([emb[w].mean(0) for w in words])

    def own_vs_other() -> tuple[float, float]:
        with torch.no_grad():
            out = llava.model.multi_modal_projector(features)
        cos = torch.nn.functional.cosine_similarity(out[:, :, None], point[None, None], dim=-1).mean(1)  # (n, 2)
        own = cos[torch.arange(64), labels].mean()
        other = cos[torch.arange(64), 1 - labels].mean()
        return float(own), float(other)

    before = own_vs_other()
    result = vocabulary_alignment(llava, features, targets,
                                  VocabularySettings(steps=300, lr=3e-3, batch_size=16, negatives_from=0,
                                                     negatives=64), seed=0)
    own, other = own_vs_other()
    assert own > 0.9 > before[0]
    assert other < own - 0.3
    assert result["cosine"] == pytest.approx(own, abs=1e-4)
    assert not any(p.requires_grad for p in llava.model.multi_modal_projector.parameters())
