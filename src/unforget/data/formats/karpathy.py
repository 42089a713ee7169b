"""``karpathy``: the Karpathy-split captioning JSON (dataset_coco.json, dataset_flickr30k.json, dataset_flickr8k.json:
``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw"}]}]}``); splits train / val / test / restval."""

from __future__ import annotations

from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._benchmark import (CAPTION_PROMPT, check_caption_metric, field_of, find_image, images_folder,
                         read_json_file)
from ._common import existing_file, register_format, wanted_splits


@register_format("karpathy", description="Karpathy-split captions JSON (dataset_coco.json / dataset_flickr30k.json); "
                 "CIDEr-D, BLEU-4, METEOR", source="Karpathy split JSON + image folder")
def load_karpathy(
    path: str,
    *,
    images: str | None = None,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
    metric: str = "",
) -> ImageDataset:
    """Images are read from ``images`` (default: the file's folder) as ``<filepath>/<filename>`` (COCO) or
    ``<filename>`` (Flickr). The sample id is ``cocoid``, else ``imgid``, else the file name. ``metric="coco"``
    adds METEOR (and SPICE where installed) to CIDEr-D and BLEU-4: slow to start."""
    file = existing_file(path, "karpathy")
    check_caption_metric(metric, "karpathy")
    data = read_json_file(file, "karpathy")
    folder = images_folder(images, file, "karpathy")
    entries = field_of(data, "images", str(file), list)
    available = list(dict.fromkeys(str(e.get("split")) for e in entries if isinstance(e, dict)))
    chosen = wanted_splits(available, splits, f"karpathy file {file}")
    out: dict[str, list[Sample]] = {s: [] for s in chosen}
    seen: set[str] = set()
    for k, entry in enumerate(entries):
        where = f"{file} images[{k}]"
        split = str(field_of(entry, "split", where, str))
        if split not in out:
            continue
        filename = field_of(entry, "filename", where, str)
        sentences = field_of(entry, "sentences", where, list)
        refs = [field_of(s, "raw", f"{where} sentences[{j}]", str).strip() for j, s in enumerate(sentences)]
        refs = [r for r in refs if r]
        if not refs:
            raise DataError(f"{where}: image {filename} has no caption")
        sub = entry.get("filepath")
        candidates = [folder / sub / filename] if isinstance(sub, str) and sub else []
        candidates.append(folder / filename)
        sample_id = str(entry.get("cocoid", entry.get("imgid", filename)))
        if sample_id in seen:
            raise DataError(f"{where}: image id {sample_id} appears twice")
        seen.add(sample_id)
        out[split].append(Sample(id=sample_id, image=find_image(candidates, where, "set images= to the image folder"),
                                 answer=refs[0], meta={"captions": refs}))
    return ImageDataset(
        name=name or file.stem, task="caption", splits=out,
        templates=list(templates) if templates is not None else [CAPTION_PROMPT], source=str(file),
        metric=metric, description=f"Karpathy-split captions from {file}",
    )
