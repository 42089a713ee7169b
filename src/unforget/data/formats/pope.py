"""``pope``: POPE's yes/no object-hallucination questions (JSON lines ``{"question_id", "image", "text", "label"}``
as RUCAIBox/POPE ships them, or ``question`` / ``answer`` keys), scored as POPE does (evaluation/scorers.py, metric
``pope``: accuracy, precision, recall, F1, yes-ratio)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._benchmark import SHORT_ANSWER_PROMPT, find_image, images_folder
from ._common import SINGLE_SPLIT, existing_file, register_format
from .jsonl import read_jsonl


def _first_key(row: dict, keys: Sequence[str], where: str) -> str:
    for key in keys:
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    raise DataError(f"{where}: no text under {' or '.join(repr(k) for k in keys)} (keys: {', '.join(row)})")


@register_format("pope", description="POPE yes/no object-hallucination JSON lines (image, text/question, "
                 "label/answer); accuracy, precision, recall, F1, yes-ratio", source="POPE JSONL file + COCO images")
def load_pope(
    path: str,
    *,
    images: str | None = None,
    split: str = SINGLE_SPLIT,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """``path``: e.g. ``coco_pope_adversarial.json`` (one JSON object per line). Image names are read from
    ``images`` (default: the file's folder)."""
    file = existing_file(path, "pope")
    folder = images_folder(images, file, "pope")
    samples = []
    seen: dict[str, int] = {}
    for lineno, row in read_jsonl(file):
        where = f"{file}:{lineno}"
        label = _first_key(row, ("label", "answer"), where).strip().lower()
        if label not in ("yes", "no"):
            raise DataError(f"{where}: the label is {label!r}; POPE answers are 'yes' or 'no'")
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            raise DataError(f"{where}: 'image' must be the image's file name, found {image!r}")
        sample_id = str(row.get("question_id", f"line-{lineno}"))
        if sample_id in seen:
            raise DataError(f"{where}: question_id {sample_id} was already used on line {seen[sample_id]}")
        seen[sample_id] = lineno
        samples.append(Sample(id=sample_id, image=find_image([folder / image], where, "set images= to the image "
                                                             "folder (COCO val2014 for POPE's COCO sets)"),
                              question=_first_key(row, ("text", "question"), where), answer=label,
                              meta={"qtype": str(row.get("category") or "")}))
    if not samples:
        raise DataError(f"{file}: no questions")
    return ImageDataset(
        name=name or Path(file).stem, task="vqa", splits={split: samples},
        templates=list(templates) if templates is not None else [SHORT_ANSWER_PROMPT], source=str(file),
        description=f"POPE questions from {file}", metric="pope", answer_list=["yes", "no"],
    )
