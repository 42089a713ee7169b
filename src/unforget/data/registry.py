"""Datasets by name: embedded sets, on-disk formats (``format:path``) and dataset YAML files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError
from ..registry import Registry, did_you_mean
from .types import DatasetLoader, ImageDataset

# Named datasets (embedded or installed from packages): loader(**options) -> ImageDataset, registered by the module
# that builds them (embedded.py, text/); the first lookup imports every module of this package.
DATASETS: Registry[DatasetLoader] = Registry("dataset", package="unforget.data")
# On-disk formats: loader(path, **options) -> ImageDataset; used as "format:path". One module of formats/ each.
FORMATS: Registry[DatasetLoader] = Registry("dataset format", package="unforget.data.formats")


@dataclass(frozen=True)
class DatasetRef:
    """A parsed dataset reference: a registered name, ``format:path``, or a dataset YAML file, each optionally
    followed by loader options as a query, ``scenes-vqa?qtypes=colour`` or ``easy-vqa?qtypes=shape,colour&n_test=500``.

    ``ref`` is the reference as written; a dataset loaded from a path or with options is named by it, so that two
    folders with the same last name, or two subsets of one base set (two cells of a study), keep their records
    apart."""

    name: str
    format: str | None = None
    path: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    ref: str = ""


# key=value pairs joined by '&' after the last '?'; values are YAML scalars or flow lists ("a,b" stays a string)
_QUERY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^&]*(?:&[A-Za-z_][A-Za-z0-9_]*=[^&]*)*")


def split_query(ref: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``"easy-vqa?qtypes=shape,colour&n_test=500"`` -> ``("easy-vqa", (("qtypes", "shape,colour"), ("n_test", 500)))``.

    Values are parsed with ``yaml.safe_load`` (``500`` is an int, ``[1, 2]`` a tuple, ``shape,colour`` a string).
    A reference without ``?`` has no options; an existing file whose name holds a ``?`` is taken as it is."""
    if "?" not in ref or Path(ref).exists():
        return ref, ()
    base, query = ref.rsplit("?", 1)
    if not base or not _QUERY.fullmatch(query):
        raise DataError(f"dataset reference '{ref}': options after '?' must be key=value pairs joined by '&', "
                        "e.g. scenes-vqa?qtypes=colour or easy-vqa?qtypes=shape,colour&n_test=500")
    options: dict[str, Any] = {}
    for pair in query.split("&"):
        key, raw = pair.split("=", 1)
        if key in options:
            raise DataError(f"dataset reference '{ref}': option '{key}' is given twice")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        options[key] = tuple(value) if isinstance(value, list) else value
    return base, tuple(options.items())


def parse_dataset_ref(ref: str) -> DatasetRef:
    base, options = split_query(ref)
    if base.endswith((".yaml", ".yml")) and Path(base).is_file():
        return DatasetRef(name=Path(base).stem, format="yaml", path=base, options=options, ref=ref)
    if ":" in base:
        fmt, path = base.split(":", 1)
        if fmt in FORMATS:
            return DatasetRef(name=Path(path).name or fmt, format=fmt, path=path, options=options, ref=ref)
        if len(fmt) > 1:  # not a Windows drive letter
            raise DataError(
                f"unknown dataset format '{fmt}' in '{ref}'.{did_you_mean(fmt, FORMATS.names())} "
                f"Formats: {', '.join(FORMATS.names())}."
            )
    return DatasetRef(name=base, options=options, ref=ref)


def load_dataset(ref: str, **options: Any) -> ImageDataset:
    """Load a dataset by registered name (``digits``), ``format:path`` (``imagefolder:/data/mini``)
    or a dataset YAML file (keys: name, format, path, templates, synonyms, class_names, options).

    Loader options come from the reference's query (``scenes-vqa?qtypes=colour``) and from ``options``; a key given
    both ways must have the same value. A dataset loaded from a path (``format:path``, a YAML file) or with query
    options is named by the full reference."""
    parsed = parse_dataset_ref(ref)
    for key, value in parsed.options:
        if key in options and options[key] != value:
            raise DataError(f"dataset '{ref}': option '{key}' is {value!r} in the reference and {options[key]!r} "
                            "in the call; give it once")
    options = {**dict(parsed.options), **options}
    if parsed.format == "yaml":
        ds = _load_yaml(Path(parsed.path or ""), **options)
    elif parsed.format is not None:
        ds = FORMATS.get(parsed.format)(parsed.path, **options)
        ds.check_labels()
    else:
        ds = DATASETS.get(parsed.name)(**options)
        ds.check_labels()
    if parsed.options or parsed.format is not None:
        # records are keyed by the reference as written, never by a folder's last name: mnist-idx:/a/mnist and
        # mnist-idx:/b/mnist are two datasets (reports shorten the names for display: reports/names.py)
        ds.name = ref
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
