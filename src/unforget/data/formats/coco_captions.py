"""``coco-captions``: a COCO captions JSON (``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
"caption"}]}``, e.g. captions_val2014.json); a captioning set scored with CIDEr-D, BLEU-4 and METEOR."""

from __future__ import annotations

from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._benchmark import (CAPTION_PROMPT, check_caption_metric, field_of, find_image, images_folder,
                         read_json_file)
from ._common import SINGLE_SPLIT, existing_file, register_format


@register_format("coco-captions", description="COCO captions JSON (images + annotations); CIDEr-D, BLEU-4, METEOR",
                 source="COCO captions JSON + image folder")
def load_coco_captions(
    path: str,
    *,
    images: str | None = None,
    split: str = SINGLE_SPLIT,
    templates: Sequence[str] | None = None,
    name: str | None = None,
    metric: str = "",
) -> ImageDataset:
    """One sample per image with every caption of it as references; images ``file_name`` are read from ``images``
    (default: the file's folder). Images without a caption are left out. ``metric="coco"`` adds METEOR (and SPICE
    where installed) to CIDEr-D and BLEU-4: slow to start."""
    file = existing_file(path, "coco-captions")
    check_caption_metric(metric, "coco-captions")
    data = read_json_file(file, "coco-captions")
    folder = images_folder(images, file, "coco-captions")
    captions: dict[int | str, list[str]] = {}
    for k, ann in enumerate(field_of(data, "annotations", str(file), list)):
        where = f"{file} annotations[{k}]"
        caption = field_of(ann, "caption", where, str)
        captions.setdefault(field_of(ann, "image_id", where, (int, str)), []).append(caption.strip())
    samples = []
    for k, img in enumerate(field_of(data, "images", str(file), list)):
        where = f"{file} images[{k}]"
        image_id = field_of(img, "id", where, (int, str))
        refs = [c for c in captions.get(image_id, []) if c]
        if not refs:
            continue
        path_ = find_image([folder / field_of(img, "file_name", where, str)], where,
                           "set images= to the folder of the COCO images (e.g. val2014)")
        samples.append(Sample(id=str(image_id), image=path_, answer=refs[0], meta={"captions": refs}))
    if not samples:
        raise DataError(f"{file}: no image has a caption (annotations' image_id must match images' id)")
    return ImageDataset(
        name=name or file.stem, task="caption", splits={split: samples},
        templates=list(templates) if templates is not None else [CAPTION_PROMPT], source=str(file),
        metric=metric, description=f"COCO captions from {file}",
    )
