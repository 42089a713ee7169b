"""``imagefolder``: images in class folders (ImageNet, miniImageNet), with or without split folders."""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from ..types import ImageDataset, Sample
from ._common import (IMAGE_EXTENSIONS, SINGLE_SPLIT, existing_dir, is_image, register_format, templates_or_default,
                      wanted_splits)

log = logging.getLogger(__name__)

CLASS_NAME_FILES = ("classes.txt", "class_names.json")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image(p))


def read_class_name_map(path: str | Path) -> dict[str, list[str]]:
    """folder name -> [readable name, synonyms...] from ``classes.txt`` (lines ``n01532829 house finch, ...``,
    as in ImageNet's LOC_synset_mapping.txt) or ``class_names.json`` ({folder: name or [name, synonyms...]})."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read the class name file: {exc}") from exc
    mapping: dict[str, list[str]] = {}
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{file}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DataError(f"{file}: expected a JSON object mapping folder name -> class name")
        for folder, value in data.items():
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise DataError(f"{file}: the entry for '{folder}' must be a name or a list of names")
            mapping[folder] = names
        return mapping
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(f"{file}:{lineno}: expected '<folder name> <class name>', found '{line}'")
        names = [n.strip() for n in parts[1].split(",") if n.strip()]
        mapping[parts[0]] = names or [parts[1].strip()]
    return mapping


def _readable_names(
    folders: list[str], option: Sequence[str] | Mapping[str, Any] | str | None, root: Path
) -> tuple[list[str], dict[str, list[str]]]:
    """Class names (and synonyms) for the class folders, from the option or a class-name file in ``root``."""
    if option is not None and not isinstance(option, (str, Path, Mapping)):
        names = list(option)
        if len(names) != len(folders):
            raise ConfigError(f"imagefolder: class_names has {len(names)} names but {root} has {len(folders)} class "
                              f"folders ({', '.join(folders[:5])}{', ...' if len(folders) > 5 else ''})")
        return [str(n) for n in names], {}
    if isinstance(option, Mapping):
        mapping = {k: [v] if isinstance(v, str) else list(v) for k, v in option.items()}
    elif option is not None:
        file = Path(option).expanduser()
        if not file.is_file():
            raise ConfigError(f"imagefolder: class_names file {file} does not exist")
        mapping = read_class_name_map(file)
    else:
        file = next((root / f for f in CLASS_NAME_FILES if (root / f).is_file()), None)
        mapping = read_class_name_map(file) if file else {}
        if file and not any(f in mapping for f in folders):
            log.warning("%s names none of the class folders in %s; using the folder names", file, root)
    names = [mapping[f][0] if f in mapping else f for f in folders]
    counts = Counter(names)
    # ImageNet has two "crane" and two "maillot" synsets: keep both, told apart by their folder.
    names = [f"{n} ({f})" if counts[n] > 1 else n for n, f in zip(names, folders)]
    synonyms = {n: mapping[f][1:] for n, f in zip(names, folders) if f in mapping and len(mapping[f]) > 1}
    return names, synonyms


@register_format("imagefolder", description="class folders, root/<split>/<class>/*.jpg or root/<class>/*.jpg "
                 "(ImageNet, miniImageNet)", source="local folder of images")
def load_imagefolder(
    path: str,
    *,
    class_names: Sequence[str] | Mapping[str, Any] | str | None = None,
    train_fraction: float | None = None,
    seed: int = 0,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """Images in class folders. With split folders (``root/train/<class>/``, ``root/val/<class>/``) each is a
    split and the class list is the union of their class folders; without, ``root/<class>/`` is one "test"
    split, or a per-class train/test split when ``train_fraction`` is set (deterministic for a ``seed``).
    Folder names such as ImageNet wnids map to readable names through ``classes.txt`` / ``class_names.json``
    in the root, or ``class_names`` (a list in folder order, a mapping, or a path to such a file)."""
    root = existing_dir(path, "imagefolder")
    top = _subdirs(root)
    if not top:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<image> or {root}/<split>/<class>/<image>")
    # Split layout: every top folder holds only folders (its classes), no images of its own.
    split_layout = all(_subdirs(d) and not any(is_image(p) for p in d.iterdir()) for d in top)
    if split_layout and train_fraction is not None:
        raise ConfigError(f"imagefolder: {root} already has split folders ({', '.join(d.name for d in top)}); "
                          "drop train_fraction")
    if split_layout:
        chosen = wanted_splits([d.name for d in top], splits, f"imagefolder {root}")
        split_dirs = {s: root / s for s in chosen}
        folders = sorted({c.name for d in split_dirs.values() for c in _subdirs(d)})
    else:
        split_dirs = {SINGLE_SPLIT: root}
        folders = [d.name for d in top]
    index = {f: i for i, f in enumerate(folders)}
    out: dict[str, list[Sample]] = {}
    for split, split_dir in split_dirs.items():
        samples: list[Sample] = []
        for class_dir in _subdirs(split_dir):
            files = _images_under(class_dir)
            if not files:
                log.warning("imagefolder: class folder %s holds no images (%s)", class_dir,
                            ", ".join(sorted(IMAGE_EXTENSIONS)))
            for file in files:
                rel = file.relative_to(root).as_posix()
                samples.append(Sample(id=rel, image=str(file), label=index[class_dir.name]))
        out[split] = samples
    if not split_layout and train_fraction is not None:
        out = _fraction_split(out[SINGLE_SPLIT], folders, train_fraction, seed)
        out = {s: out[s] for s in wanted_splits(list(out), splits, f"imagefolder {root}")}
    elif not split_layout:
        out = {s: out[s] for s in wanted_splits(list(out), splits, f"imagefolder {root}")}
    if not any(out.values()):
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the class folders")
    names, synonyms = _readable_names(folders, class_names, root)
    ds = ImageDataset(
        name=name or root.name, task="classification", splits=out, class_names=names, synonyms=synonyms,
        templates=templates_or_default(templates), source=str(root), description=f"image class folders in {root}",
    )
    ds.check_labels()
    return ds


def _fraction_split(samples: list[Sample], folders: list[str], train_fraction: float,
                    seed: int) -> dict[str, list[Sample]]:
    """Per-class shuffle and cut; each class gets its own stream so adding images to one class moves no other."""
    if not 0.0 < float(train_fraction) < 1.0:
        raise ConfigError(f"imagefolder: train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(int(s.label or 0), []).append(s)
    train: list[Sample] = []
    test: list[Sample] = []
    for label, members in sorted(by_class.items()):
        rng = np.random.default_rng([int(seed), zlib.crc32(folders[label].encode("utf-8"))])
        order = rng.permutation(len(members))
        cut = int(round(len(members) * float(train_fraction)))
        train += [members[i] for i in sorted(order[:cut])]
        test += [members[i] for i in sorted(order[cut:])]
    return {"train": train, "test": test}
