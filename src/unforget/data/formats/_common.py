"""What every dataset format shares: registration in FORMATS with option checking, path and split checks, class
names given as an option, label range checks, the default classification prompt."""

from __future__ import annotations

import functools
import inspect
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import BadSampleError, ConfigError, DataError
from ...registry import did_you_mean
from ..registry import FORMATS
from ..types import DatasetLoader, ImageDataset

DEFAULT_CLASSIFICATION_TEMPLATES = ["What is shown in this image? Answer with one of: {classes}."]
"""Prompt used for classification datasets loaded from disk unless ``templates`` is given."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SINGLE_SPLIT = "test"
"""Split name of a dataset that has no split structure on disk."""


def register_format(name: str, *, description: str, source: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register ``loader`` in FORMATS behind a wrapper that turns an unknown option into a ConfigError."""

    def add(loader: DatasetLoader) -> DatasetLoader:
        allowed = [p for p in inspect.signature(loader).parameters if p != "path"]

        @functools.wraps(loader)
        def checked(path: str, **options: Any) -> ImageDataset:
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise ConfigError(
                    f"dataset format '{name}' has no option '{unknown[0]}'.{did_you_mean(unknown[0], allowed)} "
                    f"Its options: {', '.join(allowed)}."
                )
            return loader(path, **options)

        FORMATS.register(name, checked, description=description, source=source)
        return loader

    return add


def existing_dir(path: str | Path, fmt: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{fmt}: folder {root} does not exist; check the path after '{fmt}:'")
    if not root.is_dir():
        raise DataError(f"{fmt}: {root} is a file; '{fmt}:' expects a folder")
    return root


def existing_file(path: str | Path, fmt: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{fmt}: file {file} does not exist; check the path after '{fmt}:'")
    if not file.is_file():
        raise DataError(f"{fmt}: {file} is a folder; '{fmt}:' expects a file")
    return file


def wanted_splits(available: Sequence[str], splits: Sequence[str] | str | None, where: str) -> list[str]:
    """The splits to load: all ``available`` ones, or the requested ``splits`` (each must exist)."""
    if splits is None:
        return list(available)
    requested = [splits] if isinstance(splits, str) else list(splits)
    for split in requested:
        if split not in available:
            raise DataError(
                f"{where} has no split '{split}'.{did_you_mean(split, list(available))} "
                f"It has: {', '.join(available) or '(none)'}."
            )
    return requested


def name_text(value: Any, where: str) -> str:
    """A name stored as bytes (Python 2 pickles) or str."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise DataError(f"{where}: expected a text value, found {type(value).__name__}")


def class_names_option(value: Sequence[str] | str | Path | None, fmt: str) -> list[str] | None:
    """``class_names`` as a list, or read from a file (.json list, or one name per line)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        file = Path(value).expanduser()
        if not file.is_file():
            raise ConfigError(f"{fmt}: class_names file {file} does not exist (give a list or a file path)")
        text = file.read_text(encoding="utf-8-sig")
        if file.suffix == ".json":
            try:
                names = json.loads(text)
            except ValueError as exc:
                raise DataError(f"{file}: not valid JSON: {exc}") from exc
            if not isinstance(names, list):
                raise DataError(f"{file}: expected a JSON list of class names")
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = list(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{fmt}: class_names must be non-empty strings, got {names[:5]!r}")
    if len(set(names)) != len(names):
        dup = next(n for n, c in Counter(names).items() if c > 1)
        raise ConfigError(f"{fmt}: class name '{dup}' appears twice in class_names")
    return names


def check_label_array(labels: np.ndarray, num_classes: int, where: str, hint: str) -> None:
    """Vectorised range check of integer labels; the error names the first bad index."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise BadSampleError(
            f"{where} index {i}: label {int(labels[i])} is outside the class list (0..{num_classes - 1})"
            f"{f' ({bad.size} labels are)' if bad.size > 1 else ''}; {hint}",
            sample_id=str(i),
        )


def templates_or_default(templates: Sequence[str] | None) -> list[str]:
    return list(templates) if templates is not None else list(DEFAULT_CLASSIFICATION_TEMPLATES)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()
