"""The "text" dataset: short general-knowledge and instruction prompts with accepted answers, no image.

Data, not code: ``text.yaml`` beside this file holds the prompts (``test``: evaluated, ``train``: the text-only
instruction data of smol-llava's recipe, never evaluated) and ``heldout`` prose for perplexity. An answer is right
when it names one of the accepted answers (the exact judge's rule: inside a sentence, number words as digits), so
``unforget eval --datasets text`` and the studies measure language forgetting with the same machinery as images.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import yaml

from ...errors import DataError
from ..embedded import _dataset, _embedded
from ..types import ImageDataset, Sample

TEXT_FILE = "text.yaml"


@functools.lru_cache(maxsize=1)
def _text_file() -> dict[str, Any]:
    resource = importlib.resources.files("unforget.data.text") / TEXT_FILE
    try:
        spec = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DataError("unforget/data/text/text.yaml is missing from the installed package; reinstall unforget "
                        "(pip install -e .)") from None
    for split in ("test", "train"):
        for i, item in enumerate(spec.get(split) or []):
            if not isinstance(item, dict) or not str(item.get("q", "")).strip() or not isinstance(item.get("a"), list):
                raise DataError(f"text.yaml {split}[{i}]: each prompt needs q (the prompt) and a (a list of accepted "
                                "answers)")
    return spec


def heldout_texts() -> list[str]:
    """Plain prose never trained on: its perplexity measures language drift without any judge."""
    return [str(t) for t in _text_file().get("heldout") or []]


@_embedded("text", task="text", role="language forgetting: plain text questions, no image",
           source="written for unforget", classes=None, train=40, test=101)
def text(kinds: str | tuple[str, ...] | None = None) -> ImageDataset:
    """General-knowledge, arithmetic, language and instruction prompts with accepted answers (no image)."""
    spec = _text_file()
    wanted = {kinds} if isinstance(kinds, str) else set(kinds) if kinds else None
    splits: dict[str, list[Sample]] = {}
    synonyms: dict[str, list[str]] = {}
    for split in ("train", "test"):
        samples = []
        for i, item in enumerate(spec.get(split) or []):
            kind = str(item.get("kind", "knowledge"))
            if wanted is not None and kind not in wanted:
                continue
            accepted = [str(a) for a in item["a"]]
            reference = accepted[0] if accepted else ""
            if accepted and split == "test":
                merged = synonyms.setdefault(reference, [])
                merged.extend(a for a in accepted[1:] if a not in merged)
            samples.append(Sample(id=f"{split}/{i:03d}", image=None, question=str(item["q"]).strip(),
                                  answer=reference, meta={"kind": kind, "accepted": accepted}))
        splits[split] = samples
    if not splits["test"]:
        raise DataError(f"text: no test prompt of kind {sorted(wanted or [])}; kinds are knowledge, arithmetic, "
                        "language, instruction")
    return _dataset("text", "text", splits, source="written for unforget (unforget/data/text/text.yaml)",
                    description=text.__doc__.split("\n")[0], class_names=[],
                    prompts={"templates": [], "synonyms": synonyms})
