"""Shared by the fine-tuning tests and the scripts they launch: a tiny random LLaVA and in-memory datasets.

``ft-colours``: 32x32 images of one colour with noise, 3 classes (red, green, blue), two prompt templates.
``ft-colours-vqa``: the same images with a question and an answer each.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
TEMPLATES = ["What colour is the image? Answer with one of: {classes}.", "Which colour is this ({classes})?"]
CORPUS = [t.format(classes="red, green, blue") for t in TEMPLATES] + ["Is the image red? yes no"]


def colour_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    base = np.array(list(COLOURS.values())[label])[None, None, :]
    return np.clip(base + rng.integers(-25, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def colour_dataset(n_train: int = 12, n_test: int = 6):
    from unforget.data import ImageDataset, Sample

    rng = np.random.default_rng(0)
    splits = {split: [Sample(id=f"{split}-{i}", image=colour_image(i % 3, rng), label=i % 3) for i in range(n)]
              for split, n in (("train", n_train), ("test", n_test))}
    return ImageDataset("ft-colours", "classification", splits, class_names=list(COLOURS), templates=list(TEMPLATES))


def colour_vqa_dataset():
    from unforget.data import ImageDataset, Sample

    rng = np.random.default_rng(1)
    names = list(COLOURS)
    samples = [Sample(id=f"q-{i}", image=colour_image(i % 3, rng), question="Is the image red?",
                      answer="yes" if i % 3 == 0 else "no") for i in range(6)]
    return ImageDataset("ft-colours-vqa", "vqa", {"train": samples, "test": samples[:3]}, class_names=[],
                        templates=[], synonyms={}, description=f"colours {names}")


def register_datasets() -> None:
    from unforget.data import DATASETS

    for name, loader in (("ft-colours", colour_dataset), ("ft-colours-vqa", colour_vqa_dataset)):
        if name not in DATASETS:
            DATASETS.register(name, loader, description="fine-tuning test set", task="test")


def build_tiny_llava(folder: str | Path | None = None, seed: int = 0):
    """(model, processor) of a tiny random LLaVA; saved to ``folder`` when given."""
    from unforget.models.build import LlavaShape, build_llava
    from unforget.models.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS * 20, 300)
    model, processor = build_llava(tok, LlavaShape(), seed=seed)
    if folder is not None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return model, processor


def weights_digest(model) -> str:
    """sha256 over every parameter's name and bytes."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
