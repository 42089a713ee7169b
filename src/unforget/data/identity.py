"""The identity of a dataset reference: what it resolves to on disk and a fingerprint of its content.

Records are keyed by the reference as written (``mnist-idx:/a/mnist``), never by a folder's last name, so two sets
that share a last name stay apart; the run manifest stores each reference's resolved location and content
fingerprint, so a resume into a folder whose data changed on disk is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..runs.fingerprint import file_digest, file_size
from .registry import load_dataset, parse_dataset_ref
from .types import ImageDataset, Sample

# image files hashed in full per split (evenly spaced); every other file contributes its size
FULLY_HASHED_FILES = 256


def resolved_reference(ref: str) -> str:
    """``format:path`` with the path made absolute; a dataset YAML by its absolute path; a name as it is."""
    parsed = parse_dataset_ref(ref)
    query = ref[len(ref.rsplit("?", 1)[0]):] if parsed.options else ""
    if parsed.format == "yaml":
        return f"yaml:{Path(parsed.path or '').expanduser().resolve()}{query}"
    if parsed.format is not None:
        return f"{parsed.format}:{Path(parsed.path or '').expanduser().resolve()}{query}"
    return ref


def _image_part(image: Any, hash_file: bool) -> bytes:
    if image is None:
        return b"-"
    if isinstance(image, (str, Path)):
        if hash_file:
            try:
                return f"file:{file_digest(image)}".encode()
            except OSError:
                return b"file:unreadable"
        return f"size:{file_size(image)}".encode()
    if isinstance(image, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).digest()
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(bytes(image)).digest()
    if isinstance(image, Image.Image):
        return hashlib.sha256(image.tobytes() + repr((image.mode, image.size)).encode()).digest()
    return repr(type(image)).encode()


def _sample_part(s: Sample, hash_file: bool) -> bytes:
    head = json.dumps([s.id, s.label, s.question, s.answer], ensure_ascii=False).encode()
    return head + b"|" + _image_part(s.image, hash_file)


def dataset_fingerprint(ds: ImageDataset) -> dict[str, Any]:
    """sha256 over every split's samples (ids, labels, questions, answers, image content) and the dataset's class
    names, templates and synonyms. In-memory images are hashed whole; image files by size, plus the full bytes of
    up to FULLY_HASHED_FILES evenly spaced files per split (a 60,000-file folder costs 256 reads, not 60,000)."""
    h = hashlib.sha256()
    h.update(json.dumps({"task": ds.task, "classes": ds.class_names, "templates": ds.templates,
                         "synonyms": ds.synonyms}, sort_keys=True, ensure_ascii=False).encode())
    counts = {}
    for split in sorted(ds.splits):
        samples = ds.splits[split]
        counts[split] = len(samples)
        step = max(1, len(samples) // FULLY_HASHED_FILES)
        h.update(f"split:{split}:{len(samples)}".encode())
        for i, s in enumerate(samples):
            part = _sample_part(s, hash_file=i % step == 0)
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return {"sha256": h.hexdigest(), "samples": counts}


def dataset_identity(ref: str, ds: ImageDataset | None = None) -> dict[str, Any]:
    """``{"resolved": ..., "fingerprint": ..., "samples": {split: n}}`` of one reference (loads it unless given)."""
    ds = ds if ds is not None else load_dataset(ref)
    fp = dataset_fingerprint(ds)
    return {"resolved": resolved_reference(ref), "version": ds.version, "fingerprint": fp["sha256"],
            "samples": fp["samples"]}
