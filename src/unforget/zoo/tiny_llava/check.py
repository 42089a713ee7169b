"""The tiny-llava build's accuracy check: every embedded set's test samples, asked the set's first prompt template,
answered greedily through the library's generation path and scored by exact match; the ``encoder/`` folder scored
as the library's zero-shot classifier. These are the figures of the model card.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ...data import ImageDataset, Sample
from ...evaluation.encoder import ZeroShotClassifier
from ...evaluation.generation import GenerationRequest, generate_answers
from ...models.loading import LoadedModel, load_model
from ..data import ALIGN_QUESTION, GENERIC_CLIP_TEMPLATES, vqa_question

log = logging.getLogger(__name__)


def normalise_answer(text: str) -> str:
    """Lower case, no surrounding spaces or final punctuation, single spaces.

    Stricter than the judges' ``normalise`` (which drops articles, reads number words as digits and plurals as
    singular): the model card's figures are exact matches by this rule, and an instruction-tuned answer must be
    the class name itself."""
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


def sample_answers(lm: LoadedModel, ds: ImageDataset, samples: Sequence[Sample], *, batch_size: int = 64) -> list[str]:
    """The model's greedy answers to :func:`eval_question` (8 new tokens, 32 for captions), in ``samples``' order."""
    requests = [GenerationRequest(eval_question(ds, s), s.load_image(ds.name)) for s in samples]
    return generate_answers(lm, requests, batch_size=batch_size, max_new_tokens=32 if ds.task == "caption" else 8)


def generation_accuracy(lm: LoadedModel, ds: ImageDataset, samples: Sequence[Sample], *,
                        batch_size: int = 64) -> float:
    """Exact match of the normalised greedy answer to the class name / answer / a reference caption."""
    if not samples:
        return 0.0
    answers = sample_answers(lm, ds, samples, batch_size=batch_size)
    hits = sum(normalise_answer(a) in accepted_answers(ds, s) for a, s in zip(answers, samples))
    return hits / len(samples)


def encoder_accuracy(encoder: ZeroShotClassifier, ds: ImageDataset, samples: Sequence[Sample]) -> float:
    """Top-1 accuracy of the zero-shot classifier over ``ds``'s class names with the generic templates."""
    if not samples:
        return 0.0
    pred = encoder.predict([s.load_image(ds.name) for s in samples], ds.class_names, GENERIC_CLIP_TEMPLATES)
    return float((pred == np.array([s.label for s in samples])).sum()) / len(samples)


@dataclass
class FolderCheck:
    """Accuracy of a saved model folder per set (generate + exact match) and of its encoder (zero-shot)."""

    accuracy: dict[str, float] = field(default_factory=dict)
    zero_shot: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def evaluate_folder(folder: str | Path, sets: dict[str, ImageDataset], limit: int | None = None,
                    split: str = "test") -> FolderCheck:
    """Load ``folder`` the way users do (load_model, and ``encoder/`` as the zero-shot classifier) and score every
    set."""
    lm = load_model(str(folder), device="cpu", dtype="float32")
    encoder = ZeroShotClassifier(str(Path(folder) / "encoder"))
    check = FolderCheck()
    for name, ds in sets.items():
        samples = eval_samples(ds, limit, split)
        check.counts[name] = len(samples)
        check.accuracy[name] = generation_accuracy(lm, ds, samples)
        if ds.task == "classification":
            check.zero_shot[name] = encoder_accuracy(encoder, ds, samples)
        log.info("%s: accuracy %.3f zero-shot %s", name, check.accuracy[name], check.zero_shot.get(name))
    return check


def eval_samples(ds: ImageDataset, limit: int | None, split: str = "test") -> list[Sample]:
    samples = ds.split(split)
    return list(samples[:limit]) if limit else list(samples)
