"""``gqa``: GQA's balanced questions JSON (``{question_id: {"imageId", "question", "answer", "types"}}``), scored
by exact match after normalisation (evaluation/scorers.py, metric ``exact``)."""

from __future__ import annotations

from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._benchmark import (SHORT_ANSWER_PROMPT, answer_list_option, field_of, find_image, images_folder,
                         read_json_file)
from ._common import SINGLE_SPLIT, existing_file, register_format


@register_format("gqa", description="GQA balanced questions JSON (questions keyed by id: imageId, question, "
                 "answer); exact match", source="GQA JSON file + images/<imageId>.jpg")
def load_gqa(
    path: str,
    *,
    images: str | None = None,
    split: str = SINGLE_SPLIT,
    answer_list: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """``path``: e.g. ``testdev_balanced_questions.json``. Images ``<imageId>.jpg`` are read from ``images`` (default:
    the file's folder, then its ``images/`` subfolder). ``qtype`` is the question's structural type."""
    file = existing_file(path, "gqa")
    data = read_json_file(file, "gqa")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{file}: expected GQA's questions object keyed by question id, found "
                        f"{type(data).__name__ if data else 'an empty object'}")
    folder = images_folder(images, file, "gqa")
    samples = []
    for qid, q in data.items():
        where = f"{file} question {qid}"
        image_id = field_of(q, "imageId", where, (str, int))
        answer = field_of(q, "answer", where, str)
        if not answer.strip():
            raise DataError(f"{where}: the answer is empty")
        candidates = [folder / f"{image_id}.jpg"] + ([folder / "images" / f"{image_id}.jpg"] if images is None else [])
        types = q.get("types") if isinstance(q.get("types"), dict) else {}
        samples.append(Sample(id=str(qid), image=find_image(candidates, where, "set images= to the GQA image folder"),
                              question=field_of(q, "question", where, str), answer=answer,
                              meta={"qtype": types.get("structural") or "", "image_id": image_id,
                                    "full_answer": q.get("fullAnswer") or ""}))
    return ImageDataset(
        name=name or file.stem, task="vqa", splits={split: samples},
        templates=list(templates) if templates is not None else [SHORT_ANSWER_PROMPT], source=str(file),
        description=f"GQA questions from {file}", metric="exact", answer_list=answer_list_option(answer_list, "gqa"),
    )
