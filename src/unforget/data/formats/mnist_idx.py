"""``mnist-idx``: MNIST / Fashion-MNIST / EMNIST as IDX files (plain or gzip) in a folder."""

from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._common import (check_label_array, class_names_option, existing_dir, register_format, templates_or_default,
                      wanted_splits)

# IDX type byte -> numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_NAME = re.compile(
    r"^(?:.*[-_.])?(?P<split>train|t10k|test)-(?:(?P<images>images)[-.]idx3|(?P<labels>labels)[-.]idx1)"
    r"-ubyte(?P<gz>\.gz)?$",
    re.IGNORECASE,
)
MNIST_DIGITS = [str(d) for d in range(10)]


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes, in chunks (BufferedReader.read(n) would allocate n bytes up front)."""
    out = bytearray()
    while len(out) < limit:
        chunk = stream.read(min(1 << 20, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (plain or gzip): 2 zero bytes, a type byte, ndim, ndim big-endian uint32 sizes, data."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    # gzip is recognised by its magic bytes, whatever the file is called; decompressing only as much as the
    # header declares (plus one byte, to notice extra data) keeps a gzip bomb from filling memory
    stream: Any = gzip.GzipFile(fileobj=io.BytesIO(raw)) if raw[:2] == b"\x1f\x8b" else io.BytesIO(raw)
    try:
        magic = _read_at_most(stream, 4)
        if len(magic) < 4:
            raise DataError(f"{file}: {len(magic)} bytes is too short for an IDX header; the file is truncated, "
                            "download it again")
        if magic[0] or magic[1] or magic[2] not in _IDX_DTYPES or magic[3] == 0:
            raise DataError(
                f"{file}: not an IDX file (magic bytes {magic.hex()}, expected 000008 followed by the number "
                "of dimensions, e.g. 00000803 for images, 00000801 for labels)"
            )
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        sizes = _read_at_most(stream, 4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(f"{file}: truncated IDX header ({4 + len(sizes)} of {4 + 4 * ndim} bytes); download "
                            "the file again")
        dims = struct.unpack(f">{ndim}I", sizes)
        count = int(np.prod(dims, dtype=object))
        expected = count * dtype.itemsize
        data = _read_at_most(stream, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{file}: corrupt gzip data ({exc}); download the file again") from exc
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{file}: IDX header declares shape {tuple(dims)} ({expected:,} data bytes) but the file holds "
            f"{'more' if len(data) > expected else f'{len(data):,}'}: it is {state}; download it again"
        )
    return np.frombuffer(data, dtype=dtype, count=count).reshape(dims)


def _find_idx_files(root: Path) -> dict[tuple[str, str], Path]:
    """(split, 'images'|'labels') -> file, looking in ``root`` and then ``root/raw`` (torchvision's layout)."""
    found: dict[tuple[str, str], list[Path]] = {}
    for folder in (root, root / "raw"):
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            match = _IDX_NAME.match(file.name)
            if match and file.is_file():
                split = "train" if match["split"].lower() == "train" else "test"
                kind = "images" if match["images"] else "labels"
                found.setdefault((split, kind), []).append(file)
        if found:
            break
    chosen = {}
    for key, files in found.items():
        plain = [f for f in files if not f.name.lower().endswith(".gz")]
        candidates = plain or files  # the same data plain and gzipped: read the plain one
        if len(candidates) > 1:
            raise DataError(
                f"{root}: several {key[0]} {key[1]} files: {', '.join(f.name for f in candidates)}; "
                "keep one dataset per folder"
            )
        chosen[key] = candidates[0]
    return chosen


@register_format("mnist-idx", description="MNIST / Fashion-MNIST / EMNIST IDX files (plain or .gz) in a folder",
                 source="http://yann.lecun.com/exdb/mnist/ , https://github.com/zalandoresearch/fashion-mnist")
def load_mnist_idx(
    path: str,
    *,
    class_names: Sequence[str] | str | None = None,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """A folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (plain or .gz; also found under ``raw/``). Classes are "0".."9" unless
    ``class_names`` (a list or a file with one name per line) is given, e.g. the Fashion-MNIST names."""
    root = existing_dir(path, "mnist-idx")
    files = _find_idx_files(root)
    available = [s for s in ("train", "test") if (s, "images") in files or (s, "labels") in files]
    if not available:
        raise DataError(
            f"{root}: no MNIST IDX files found; expected train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (plain or .gz)"
        )
    names = class_names_option(class_names, "mnist-idx") or list(MNIST_DIGITS)
    out: dict[str, list[Sample]] = {}
    for split in wanted_splits(available, splits, f"mnist-idx folder {root}"):
        if (split, "images") not in files or (split, "labels") not in files:
            have, lack = ("images", "labels") if (split, "images") in files else ("labels", "images")
            raise DataError(f"{root}: found the {split} {have} file {files[(split, have)].name} but no {split} "
                            f"{lack} file; both are needed")
        image_file, label_file = files[(split, "images")], files[(split, "labels")]
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3:
            raise DataError(f"{image_file}: expected 3 dimensions (count, height, width), found shape {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{label_file}: expected a 1-D integer label array, found {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise DataError(
                f"{image_file.name} holds {len(images):,} images but {label_file.name} holds {len(labels):,} "
                f"labels (in {root}); the files belong to different datasets or one is incomplete"
            )
        check_label_array(labels.astype(np.int64), len(names), f"{label_file}",
                           "pass class_names with one name per class")
        out[split] = [Sample(id=f"{split}/{i}", image=images[i], label=int(labels[i])) for i in range(len(labels))]
    ds = ImageDataset(
        name=name or root.name, task="classification", splits=out, class_names=names,
        templates=templates_or_default(templates), source=str(root), description=f"IDX image/label files from {root}",
    )
    ds.check_labels()
    return ds
