"""``vqa``: the VQAv2 questions + annotations JSON pair (also OK-VQA), and the one-file VizWiz / TextVQA layouts,
scored with the official VQA accuracy over the ten human answers (evaluation/scorers.py, metric ``vqa``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._benchmark import (SHORT_ANSWER_PROMPT, answer_list_option, field_of, find_image, images_folder,
                         read_json_file)
from ._common import SINGLE_SPLIT, register_format


def _pair_files(root: Path, annotations: str | None) -> tuple[Path, Path | None]:
    """(questions file, annotations file or None for a one-file layout)."""
    if root.is_dir():
        questions = sorted(p for p in root.glob("*.json") if "question" in p.name.lower())
        answers = sorted(p for p in root.glob("*.json") if "annotation" in p.name.lower())
        if len(questions) != 1 or len(answers) != 1:
            raise DataError(f"vqa: folder {root} should hold one *questions*.json and one *annotations*.json; found "
                            f"{[p.name for p in questions]} and {[p.name for p in answers]}. Give the questions file "
                            "as the path and annotations= the annotations file.")
        return questions[0], answers[0]
    if annotations is not None:
        file = root.parent / Path(annotations).expanduser()
        if not file.is_file():
            raise DataError(f"vqa: annotations file {file} does not exist (annotations= is read relative to "
                            f"{root.parent})")
        return root, file
    return root, None


def _human_answers(value: Any, where: str) -> list[str]:
    """The human answers: [{"answer": ...}, ...] (VQAv2, OK-VQA, VizWiz) or a list of texts (TextVQA)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'answers' must be a non-empty list of human answers, found {value!r}")
    out = []
    for k, item in enumerate(value):
        text = item.get("answer") if isinstance(item, dict) else item
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise DataError(f"{where}: answers[{k}] is {item!r}; expected text or {{\"answer\": text}}")
        out.append(str(text))
    return out


def _image_candidates(folder: Path, item: dict, subtype: str | None, pattern: str | None) -> list[Path]:
    if isinstance(item.get("image"), str):
        return [folder / item["image"]]
    image_id = item.get("image_id")
    if pattern is not None:
        return [folder / pattern.format(image_id=image_id, subtype=subtype)]
    names = []
    if isinstance(image_id, int):
        if subtype:
            names.append(f"COCO_{subtype}_{image_id:012d}.jpg")
            names.append(f"{subtype}/COCO_{subtype}_{image_id:012d}.jpg")
        names.append(f"{image_id:012d}.jpg")
    names.append(f"{image_id}.jpg")
    return [folder / n for n in names]


@register_format("vqa", description="VQAv2 / OK-VQA questions + annotations JSON (or a VizWiz / TextVQA JSON); "
                 "official VQA accuracy over the human answers", source="VQAv2-style JSON files")
def load_vqa(
    path: str,
    *,
    annotations: str | None = None,
    images: str | None = None,
    image_pattern: str | None = None,
    split: str = SINGLE_SPLIT,
    answer_list: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """``path``: the questions JSON (``{"questions": [{"question_id", "image_id", "question"}], "data_subtype"}``)
    with ``annotations=`` the annotations JSON (``{"annotations": [{"question_id", "answers": [{"answer"}],
    "multiple_choice_answer", "question_type", "answer_type"}]}``), or a folder holding both; or one JSON of
    items with ``question``, ``answers`` and ``image`` (VizWiz) or ``image_id`` (TextVQA, ``{"data": [...]}``).
    Images are read from ``images`` (default: the file's folder) as ``COCO_<subtype>_<id:012d>.jpg``,
    ``<id:012d>.jpg`` or ``<id>.jpg``, or as ``image_pattern`` (fields ``{image_id}``, ``{subtype}``)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"vqa: {root} does not exist; check the path after 'vqa:'")
    qfile, afile = _pair_files(root, annotations)
    data = read_json_file(qfile, "vqa")
    folder = images_folder(images, qfile, "vqa")
    hint = "set images= (the image folder) or image_pattern= (e.g. 'COCO_val2014_{image_id:012d}.jpg')"
    samples: list[Sample] = []
    if afile is not None or (isinstance(data, dict) and "questions" in data):
        if afile is None:
            raise DataError(f"{qfile}: a VQAv2 questions file; give its annotations file as annotations= (the "
                            "human answers are there)")
        questions = field_of(data, "questions", str(qfile), list)
        subtype = data.get("data_subtype") if isinstance(data.get("data_subtype"), str) else None
        adata = read_json_file(afile, "vqa")
        by_id: dict[Any, dict] = {}
        for k, ann in enumerate(field_of(adata, "annotations", str(afile), list)):
            by_id[field_of(ann, "question_id", f"{afile} annotations[{k}]", (int, str))] = ann
        for k, q in enumerate(questions):
            where = f"{qfile} questions[{k}]"
            qid = field_of(q, "question_id", where, (int, str))
            ann = by_id.get(qid)
            if ann is None:
                raise DataError(f"{where}: question {qid} has no annotation in {afile}; the two files must be of the "
                                "same split")
            where_a = f"{afile} annotation of question {qid}"
            humans = _human_answers(ann.get("answers"), where_a)
            answer = ann.get("multiple_choice_answer")
            if not (isinstance(answer, (str, int)) and str(answer)):
                answer = Counter(humans).most_common(1)[0][0]
            samples.append(Sample(
                id=str(qid), image=find_image(_image_candidates(folder, q, subtype, image_pattern), where, hint),
                question=field_of(q, "question", where, str), answer=str(answer),
                meta={"answers": humans, "qtype": ann.get("question_type") or "", "answer_type":
                      ann.get("answer_type") or "", "image_id": q.get("image_id")}))
    else:
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise DataError(f"{qfile}: expected a VQAv2 questions file, a list of questions (VizWiz) or "
                            "{\"data\": [...]} (TextVQA)")
        for k, item in enumerate(items):
            where = f"{qfile} item {k}"
            humans = _human_answers(field_of(item, "answers", where, list), where)
            qid = item.get("question_id", item.get("image", k))
            samples.append(Sample(
                id=str(qid), image=find_image(_image_candidates(folder, item, None, image_pattern), where, hint),
                question=field_of(item, "question", where, str), answer=Counter(humans).most_common(1)[0][0],
                meta={"answers": humans, "answer_type": item.get("answer_type") or ""}))
    if not samples:
        raise DataError(f"{qfile}: no questions")
    ids = Counter(s.id for s in samples)
    dup = next((i for i, c in ids.items() if c > 1), None)
    if dup is not None:
        raise DataError(f"{qfile}: question id {dup} appears more than once")
    return ImageDataset(
        name=name or qfile.stem, task="vqa", splits={split: samples},
        templates=list(templates) if templates is not None else [SHORT_ANSWER_PROMPT], source=str(qfile),
        description=f"VQA questions from {qfile}", metric="vqa", answer_list=answer_list_option(answer_list, "vqa"),
    )
