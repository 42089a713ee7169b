"""What the conversation formats (``llava-conversations``, ``sharegpt``, ``alpaca``) share: reading a JSON list or
JSON lines file, the ``<image>`` placeholder, image paths, and one sample per conversation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ...errors import DataError
from ..conversation import CONVERSATION_KEY, ChatTurn, Conversation, Role
from ..types import ImageDataset, Sample
from ._table import decode_text
from .jsonl import read_jsonl

IMAGE_PLACEHOLDER = "<image>"
"""Where the image goes in a turn's text: LLaVA's ``DEFAULT_IMAGE_TOKEN`` and LLaMA-Factory's ``IMAGE_PLACEHOLDER``."""


def read_records(file: Path) -> list[tuple[str, dict[str, Any]]]:
    """The objects of a JSON list (``.json``, as LLaVA and LLaMA-Factory ship them) or of JSON lines (``.jsonl``),
    each with where it is (``file:line`` or ``file[index]``) for error messages."""
    if file.suffix == ".jsonl":
        return [(f"{file}:{line}", obj) for line, obj in read_jsonl(file)]
    try:
        data = json.loads(decode_text(file))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); a .json file must "
                        "hold one list of objects (name the file .jsonl for one object per line)") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{file}: not usable JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataError(f"{file}: expected a JSON list of samples, found {type(data).__name__}")
    records = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{file}[{i}]: expected an object per sample, found {type(obj).__name__}")
        records.append((f"{file}[{i}]", obj))
    return records


def text_field(value: Any, where: str, what: str, *, allow_empty: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} must be text, found {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: {what} is empty; fix or remove this sample")
    return value


def image_list(value: Any, where: str, column: str) -> list[str]:
    """The image paths of a sample: a path or a list of paths (LLaMA-Factory's ``images``); none: []."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise DataError(f"{where}: '{column}' must be an image path or a list of image paths, got {value!r}")
    return values


def resolve_image(path: str, root: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else root / p)


def image_root_of(file: Path, image_root: str | None) -> Path:
    """Where relative image paths are read from: the file's folder, or ``image_root`` (relative to that folder);
    LLaVA's ``--image_folder``, LLaMA-Factory's ``media_dir``."""
    if image_root is None:
        return file.parent
    root = Path(image_root).expanduser()
    return root if root.is_absolute() else file.parent / root


def conversation_sample(sample_id: str, turns: Sequence[tuple[Role, str]], *, system: str, images: Sequence[str],
                        where: str) -> Sample:
    """One sample of ``turns`` (user first, alternating, assistant last): the image placeholder checked and taken
    out of the text (the image belongs to the first user turn), the first exchange as question and answer."""
    if len(images) > 1:
        raise DataError(f"{where}: {len(images)} images; unforget trains on one image per sample: split the sample "
                        "or keep one image")
    count = sum(text.count(IMAGE_PLACEHOLDER) for _, text in turns)
    if images and count != 1:
        raise DataError(f"{where}: the sample has an image but {count} '{IMAGE_PLACEHOLDER}' placeholders in its "
                        f"turns; put exactly one '{IMAGE_PLACEHOLDER}' in the first user turn")
    if not images and count:
        raise DataError(f"{where}: a text-only sample (no image) has '{IMAGE_PLACEHOLDER}' in its turns; give the "
                        "image or remove the placeholder")
    if images and IMAGE_PLACEHOLDER not in turns[0][1]:
        raise DataError(f"{where}: '{IMAGE_PLACEHOLDER}' must be in the first user turn (the image is shown there)")
    cleaned = [ChatTurn(role, text.replace(IMAGE_PLACEHOLDER, "").strip() if role == "user" else text)
               for role, text in turns]
    try:
        conversation = Conversation(tuple(cleaned), system=system)
    except DataError as exc:
        raise DataError(f"{where}: {exc}; fix or remove this sample") from None
    for turn in cleaned:
        if turn.role == "assistant" and not turn.text.strip():
            raise DataError(f"{where}: an assistant turn is empty, so there is nothing to learn from it; fix or "
                            "remove this sample")
        if turn.role == "user" and not turn.text and not images:
            raise DataError(f"{where}: a user turn is empty; fix or remove this sample")
    return Sample(id=sample_id, image=images[0] if images else None, question=cleaned[0].text,
                  answer=cleaned[1].text, meta={CONVERSATION_KEY: conversation})


def unique_ids(ids: Sequence[str]) -> list[str]:
    """Ids made unique by a ``#n`` suffix on the 2nd, 3rd... repeat (training picks and records key on ids)."""
    seen: Counter[str] = Counter()
    out = []
    for i in ids:
        seen[i] += 1
        out.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return out


def conversation_dataset(name: str, samples: list[Sample], *, split: str, fmt: str, file: Path,
                         description: str) -> ImageDataset:
    if not samples:
        raise DataError(f"{file}: no sample; a {fmt} file needs at least one conversation")
    samples = [s if s.id == new else Sample(new, s.image, s.label, s.question, s.answer, s.meta)
               for s, new in zip(samples, unique_ids([s.id for s in samples]))]
    task = "vqa" if any(s.image is not None for s in samples) else "text"
    return ImageDataset(name=name, task=task, splits={split: samples}, source=f"{fmt}:{file}",
                        description=description)
