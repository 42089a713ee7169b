"""Datasets by name: embedded sets, on-disk formats (``format:path``) and dataset YAML files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError
from ..registry import Registry, did_you_mean
from .types import DatasetLoader, ImageDataset

# Named datasets (embedded or installed from packages): loader(**options) -> ImageDataset.
DATASETS: Registry[DatasetLoader] = Registry("dataset", modules=("unforget.data.embedded",))
# On-disk formats: loader(path, **options) -> ImageDataset; used as "format:path".
FORMATS: Registry[DatasetLoader] = Registry("dataset format", modules=("unforget.data.formats",))


@dataclass(frozen=True)
class DatasetRef:
    """A parsed dataset reference: a registered name, ``format:path``, or a dataset YAML file."""

    name: str
    format: str | None = None
    path: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


def parse_dataset_ref(ref: str) -> DatasetRef:
    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        return DatasetRef(name=Path(ref).stem, format="yaml", path=ref)
    if ":" in ref:
        fmt, path = ref.split(":", 1)
        if fmt in FORMATS:
            return DatasetRef(name=Path(path).name or fmt, format=fmt, path=path)
        if len(fmt) > 1:  # not a Windows drive letter
            raise DataError(
                f"unknown dataset format '{fmt}' in '{ref}'.{did_you_mean(fmt, FORMATS.names())} "
                f"Formats: {', '.join(FORMATS.names())}."
            )
    return DatasetRef(name=ref)


def load_dataset(ref: str, **options: Any) -> ImageDataset:
    """Load a dataset by registered name (``digits``), ``format:path`` (``imagefolder:/data/mini``)
    or a dataset YAML file (keys: name, format, path, templates, synonyms, class_names, options)."""
    parsed = parse_dataset_ref(ref)
    if parsed.format == "yaml":
        return _load_yaml(Path(parsed.path or ""), **options)
    if parsed.format is not None:
        ds = FORMATS.get(parsed.format)(parsed.path, **options)
    else:
        ds = DATASETS.get(parsed.name)(**options)
    ds.check_labels()
    return ds


_YAML_KEYS = {"name", "format", "path", "templates", "synonyms", "class_names", "options", "description"}


def _load_yaml(path: Path, **options: Any) -> ImageDataset:
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from exc
    unknown = set(spec) - _YAML_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise DataError(f"{path}: unknown key '{key}'.{did_you_mean(key, sorted(_YAML_KEYS))}")
    if "format" not in spec or "path" not in spec:
        raise DataError(f"{path}: a dataset YAML needs 'format' and 'path' (e.g. format: imagefolder)")
    data_path = Path(spec["path"])
    if not data_path.is_absolute():
        data_path = path.parent / data_path
    ds = FORMATS.get(spec["format"])(str(data_path), **{**spec.get("options", {}), **options})
    ds.name = spec.get("name", ds.name)
    for key in ("templates", "synonyms", "class_names", "description"):
        if key in spec:
            setattr(ds, key, spec[key])
    ds.check_labels()
    return ds
