"""Loaders for the dataset formats users already have on disk, used as ``load_dataset("<format>:<path>")``.

Formats: ``mnist-idx`` (MNIST / Fashion-MNIST IDX files), ``cifar10`` and ``cifar100`` (the official python
pickle folders, read through a restricted unpickler), ``imagefolder`` (ImageNet / miniImageNet class folders),
``jsonl`` and ``csv`` (rows of image path, question, answer or label) and ``hf`` (a ``datasets`` dataset saved
with ``save_to_disk``, a folder of parquet files, or an image folder read with the ``imagefolder`` builder).

Loaders are strict: a missing file, a malformed header / line / column or a label outside the class list raises
a :class:`DataError` (or :class:`BadSampleError`) naming the file and line or index. Image files are opened
lazily (``Sample.image`` is a path, bytes or an array view), so a corrupt image surfaces as a
``BadSampleError`` from ``Sample.load_image`` when it is used; skipping such samples is the evaluator's job.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import inspect
import io
import json
import logging
import pickle
import pickletools
import re
import struct
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BadSampleError, ConfigError, DataError
from ..registry import did_you_mean
from .registry import FORMATS
from .types import DatasetLoader, ImageDataset, Sample

log = logging.getLogger(__name__)

DEFAULT_CLASSIFICATION_TEMPLATES = ["What is shown in this image? Answer with one of: {classes}."]
"""Prompt used for classification datasets loaded from disk unless ``templates`` is given."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SINGLE_SPLIT = "test"
"""Split name of a dataset that has no split structure on disk."""


def _register(name: str, *, description: str, source: str) -> Callable[[DatasetLoader], DatasetLoader]:
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


# ---------------------------------------------------------------------------------------------- shared helpers


def _existing_dir(path: str | Path, fmt: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{fmt}: folder {root} does not exist; check the path after '{fmt}:'")
    if not root.is_dir():
        raise DataError(f"{fmt}: {root} is a file; '{fmt}:' expects a folder")
    return root


def _existing_file(path: str | Path, fmt: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"{fmt}: file {file} does not exist; check the path after '{fmt}:'")
    if not file.is_file():
        raise DataError(f"{fmt}: {file} is a folder; '{fmt}:' expects a file")
    return file


def _wanted_splits(available: Sequence[str], splits: Sequence[str] | str | None, where: str) -> list[str]:
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


def _text(value: Any, where: str) -> str:
    """A name stored as bytes (Python 2 pickles) or str."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise DataError(f"{where}: expected a text value, found {type(value).__name__}")


def _class_names_option(value: Sequence[str] | str | Path | None, fmt: str) -> list[str] | None:
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


def _check_label_array(labels: np.ndarray, num_classes: int, where: str, hint: str) -> None:
    """Vectorised range check of integer labels; the error names the first bad index."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise BadSampleError(
            f"{where} index {i}: label {int(labels[i])} is outside the class list (0..{num_classes - 1})"
            f"{f' ({bad.size} labels are)' if bad.size > 1 else ''}; {hint}",
            sample_id=str(i),
        )


def _templates(templates: Sequence[str] | None) -> list[str]:
    return list(templates) if templates is not None else list(DEFAULT_CLASSIFICATION_TEMPLATES)


# -------------------------------------------------------------------------------------------------- mnist-idx

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


@_register("mnist-idx", description="MNIST / Fashion-MNIST / EMNIST IDX files (plain or .gz) in a folder",
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
    root = _existing_dir(path, "mnist-idx")
    files = _find_idx_files(root)
    available = [s for s in ("train", "test") if (s, "images") in files or (s, "labels") in files]
    if not available:
        raise DataError(
            f"{root}: no MNIST IDX files found; expected train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (plain or .gz)"
        )
    names = _class_names_option(class_names, "mnist-idx") or list(MNIST_DIGITS)
    out: dict[str, list[Sample]] = {}
    for split in _wanted_splits(available, splits, f"mnist-idx folder {root}"):
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
        _check_label_array(labels.astype(np.int64), len(names), f"{label_file}",
                           "pass class_names with one name per class")
        out[split] = [Sample(id=f"{split}/{i}", image=images[i], label=int(labels[i])) for i in range(len(labels))]
    ds = ImageDataset(
        name=name or root.name, task="classification", splits=out, class_names=names,
        templates=_templates(templates), source=str(root), description=f"IDX image/label files from {root}",
    )
    ds.check_labels()
    return ds


# ----------------------------------------------------------------------------------------- cifar10 / cifar100


# numpy's own dtype/ndarray __setstate__ trust their input: a malformed state can crash the interpreter
# (np.dtype("u1").__setstate__((3, "|", None, -1, -1, 0)) segfaults numpy 2.4). So the pickle VM never touches
# numpy: the allowed globals map to stand-ins that check the pickled state, and real arrays are built with
# np.frombuffer only after every check passed.
_SIMPLE_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})
_MAX_DIMS = 32


def _ascii(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        raise pickle.UnpicklingError(f"{what} is {type(value).__name__}, expected text")
    return value


class _PickledDType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` + its state; plain numeric dtypes only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        self.spec = _ascii(spec, "dtype")
        if self.spec not in _SIMPLE_DTYPES:
            raise pickle.UnpicklingError(f"dtype '{self.spec}' is not a plain numeric type")
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # (version 3|4, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise pickle.UnpicklingError("malformed dtype state")
        byteorder = _ascii(state[1], "dtype byte order")
        if byteorder not in ("|", "<", ">", "=") or any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("dtype state is not that of a plain numeric type")
        self.byteorder = byteorder

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype if self.byteorder in ("|", "=") else dtype.newbyteorder(self.byteorder)


class _PickledArray:
    """Stand-in for an ndarray under reconstruction; ``array`` is set once its state checked out."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def fill(self, raw: Any, dtype: Any, shape: Any, fortran: bool) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError("array state given twice")
        if not isinstance(dtype, _PickledDType):
            raise pickle.UnpicklingError("array dtype is not a pickled numpy dtype")
        if (not isinstance(shape, tuple) or len(shape) > _MAX_DIMS
                or not all(type(n) is int and 0 <= n < 2**40 for n in shape)):
            raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
        if isinstance(raw, pickle.PickleBuffer):
            raw = raw.raw().tobytes()
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("array data is not raw bytes (object arrays are refused)")
        resolved = dtype.resolve()
        count = int(np.prod(shape, dtype=object))
        if len(raw) != count * resolved.itemsize:
            raise pickle.UnpicklingError(f"array data holds {len(raw)} bytes, shape {shape} needs "
                                         f"{count * resolved.itemsize}")
        self.array = np.frombuffer(bytes(raw), dtype=resolved, count=count).reshape(shape,
                                                                                 order="F" if fortran else "C")

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw) or, from old numpy, (shape, dtype, is_fortran, raw)
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state
        self.fill(raw, dtype, shape, bool(fortran))


_NDARRAY = object()  # what numpy.ndarray unpickles to: only a marker for _reconstruct's subtype argument


def _reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> _PickledArray:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("only plain numpy.ndarray can be reconstructed")
    return _PickledArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> _PickledArray:
    """Protocol-5 arrays (what numpy writes for Python 3 re-pickled copies)."""
    array = _PickledArray()
    array.fill(buf, dtype, shape, _ascii(order, "array order") == "F")
    return array


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 writes bytes into protocol-2 pickles (``_codecs.encode(text, 'latin1')``); nothing else."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _Callable:
    """What a pickle gets for an allowed global: callable, but BUILD cannot set attributes on it (which on the
    bare function or class would change this module for every later load)."""

    __slots__ = ("target",)

    def __init__(self, target: Callable[..., Any]):
        self.target = target

    def __call__(self, *args: Any) -> Any:
        return self.target(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on a global")


_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Callable(_PickledDType),
    ("numpy.core.multiarray", "_reconstruct"): _Callable(_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Callable(_reconstruct),
    ("numpy.core.numeric", "_frombuffer"): _Callable(_frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _Callable(_frombuffer),
    ("_codecs", "encode"): _Callable(_latin1_encode),
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, str, ints (built by opcodes, no globals) and plain numeric numpy arrays:
    the official CIFAR files name numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype, and
    those resolve to checking stand-ins. Any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(module, name) from None


def _materialise(obj: Any) -> Any:
    """Swap the stand-ins in an unpickled structure for real numpy arrays / dtypes."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array never received its data")
        return obj.array
    if isinstance(obj, _PickledDType):
        return obj.resolve()
    if isinstance(obj, dict):
        return {_materialise(k): _materialise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def read_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR batch / meta pickle safely; returns its dict with keys decoded to str."""
    file = Path(path)
    try:
        raw = file.read_bytes()
        # Walk the opcodes first: pickletools checks each declared string / bytes length against what the file
        # holds, whereas the unpickler allocates the declared length before reading (a flipped length byte
        # would ask for gigabytes).
        for _ in pickletools.genops(raw):
            pass
        obj = _materialise(_CifarUnpickler(io.BytesIO(raw), encoding="bytes").load())
    except _ForbiddenGlobal as exc:
        raise DataError(
            f"{file}: refusing to unpickle '{exc.qualname}': CIFAR files hold only dicts, lists, bytes and numpy "
            "arrays, and a pickle that names other code can run it. Use the official files from "
            "https://www.cs.toronto.edu/~kriz/cifar.html"
        ) from None
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    except Exception as exc:  # a malformed pickle can fail in many ways (EOF, bad opcode, bad array state...)
        raise DataError(f"{file}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}); the file is "
                        "truncated or corrupt, download it again") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{file}: expected a pickled dict (a CIFAR batch), found {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_root(path: str, fmt: str, meta_name: str, folder_name: str) -> Path:
    root = _existing_dir(path, fmt)
    if (root / meta_name).is_file():
        return root
    if (root / folder_name / meta_name).is_file():
        return root / folder_name
    tarball = next(iter(sorted(root.glob("cifar-*-python.tar.gz"))), None)
    hint = f" Extract {tarball.name} first (tar xzf {tarball.name})." if tarball else ""
    raise DataError(f"{root}: no '{meta_name}' file here or in {folder_name}/; is this the {folder_name} folder?"
                    f"{hint}")


def _cifar_batch(file: Path, label_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N x 32 x 32 x 3 as a view, labels, filenames) of one batch file."""
    batch = read_cifar_pickle(file)
    for key in ("data", label_key):
        if key not in batch:
            raise DataError(f"{file}: no '{key}' entry; it has: {', '.join(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{file}: 'data' must be a uint8 array of shape (N, 3072), found {desc}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{file}: '{label_key}' is not a list of integers ({exc})") from exc
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{file}: {len(data):,} images but '{label_key}' has shape {labels.shape}")
    raw_names = batch.get("filenames")
    filenames = [_text(f, str(file)) for f in raw_names] if isinstance(raw_names, list) else []
    # CIFAR rows are channel-major (1024 R, 1024 G, 1024 B); a transposed view costs no copy.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels, filenames


def _load_cifar(
    path: str, *, fmt: str, folder_name: str, meta_name: str, split_files: Mapping[str, list[str]],
    label_key: str, names_key: str, splits: Sequence[str] | str | None, templates: Sequence[str] | None,
    name: str | None,
) -> ImageDataset:
    root = _cifar_root(path, fmt, meta_name, folder_name)
    meta = read_cifar_pickle(root / meta_name)
    if not isinstance(meta.get(names_key), list):
        raise DataError(f"{root / meta_name}: no '{names_key}' list; it has: {', '.join(meta)}")
    class_names = [_text(n, str(root / meta_name)) for n in meta[names_key]]
    available = [s for s, fs in split_files.items() if any((root / f).is_file() for f in fs)]
    out: dict[str, list[Sample]] = {}
    for split in _wanted_splits(available, splits, f"{fmt} folder {root}"):
        missing = [f for f in split_files[split] if not (root / f).is_file()]
        if missing:
            raise DataError(f"{root}: the {split} split needs {', '.join(missing)}, which is missing; "
                            f"download and extract the archive again")
        samples: list[Sample] = []
        for fname in split_files[split]:
            images, labels, filenames = _cifar_batch(root / fname, label_key)
            _check_label_array(labels, len(class_names), str(root / fname),
                               f"the file does not match {meta_name}")
            for i in range(len(labels)):
                meta_i = {"filename": filenames[i]} if filenames else {}
                samples.append(Sample(id=f"{split}/{len(samples)}", image=images[i], label=int(labels[i]),
                                      meta=meta_i))
        out[split] = samples
    ds = ImageDataset(
        name=name or fmt, task="classification", splits=out, class_names=class_names,
        templates=_templates(templates), source=str(root), description=f"{fmt.upper()} python batches from {root}",
    )
    ds.check_labels()
    return ds


@_register("cifar10", description="CIFAR-10 python pickle folder (cifar-10-batches-py), read without running code",
           source="https://www.cs.toronto.edu/~kriz/cifar.html")
def load_cifar10(
    path: str,
    *,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """The cifar-10-batches-py folder (or its parent): data_batch_1..5 -> train, test_batch -> test,
    class names from batches.meta."""
    return _load_cifar(
        path, fmt="cifar10", folder_name="cifar-10-batches-py", meta_name="batches.meta",
        split_files={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        label_key="labels", names_key="label_names", splits=splits, templates=templates, name=name,
    )


@_register("cifar100", description="CIFAR-100 python pickle folder (cifar-100-python), fine or coarse labels",
           source="https://www.cs.toronto.edu/~kriz/cifar.html")
def load_cifar100(
    path: str,
    *,
    coarse: bool = False,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """The cifar-100-python folder (or its parent): train, test and meta. ``coarse=True`` uses the 20
    superclasses instead of the 100 fine classes."""
    kind = "coarse" if coarse else "fine"
    return _load_cifar(
        path, fmt="cifar100", folder_name="cifar-100-python", meta_name="meta",
        split_files={"train": ["train"], "test": ["test"]}, label_key=f"{kind}_labels",
        names_key=f"{kind}_label_names", splits=splits, templates=templates, name=name,
    )


# ------------------------------------------------------------------------------------------------ imagefolder

CLASS_NAME_FILES = ("classes.txt", "class_names.json")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p))


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


@_register("imagefolder", description="class folders, root/<split>/<class>/*.jpg or root/<class>/*.jpg (ImageNet, "
           "miniImageNet)", source="local folder of images")
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
    root = _existing_dir(path, "imagefolder")
    top = _subdirs(root)
    if not top:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<image> or {root}/<split>/<class>/<image>")
    # Split layout: every top folder holds only folders (its classes), no images of its own.
    split_layout = all(_subdirs(d) and not any(_is_image(p) for p in d.iterdir()) for d in top)
    if split_layout and train_fraction is not None:
        raise ConfigError(f"imagefolder: {root} already has split folders ({', '.join(d.name for d in top)}); "
                          "drop train_fraction")
    if split_layout:
        chosen = _wanted_splits([d.name for d in top], splits, f"imagefolder {root}")
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
        out = {s: out[s] for s in _wanted_splits(list(out), splits, f"imagefolder {root}")}
    elif not split_layout:
        out = {s: out[s] for s in _wanted_splits(list(out), splits, f"imagefolder {root}")}
    if not any(out.values()):
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the class folders")
    names, synonyms = _readable_names(folders, class_names, root)
    ds = ImageDataset(
        name=name or root.name, task="classification", splits=out, class_names=names, synonyms=synonyms,
        templates=_templates(templates), source=str(root), description=f"image class folders in {root}",
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


# ---------------------------------------------------------------------------------------------- jsonl and csv

Row = tuple[int, dict[str, Any]]
"""(line number, the row's columns)."""


def _decode_text(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{file}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as "
                        "UTF-8") from None


def read_jsonl(path: str | Path) -> list[Row]:
    """The JSON objects of a JSONL file with their line numbers; blank lines are skipped."""
    file = Path(path)
    rows: list[Row] = []
    # split on "\n" only: str.splitlines() also breaks at U+2028 & co, which JSON allows inside strings
    for lineno, line in enumerate(_decode_text(file).split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove "
                            "this line") from None
        except (ValueError, RecursionError) as exc:  # e.g. an integer too long, nesting too deep
            raise DataError(f"{file}:{lineno}: not usable JSON ({exc}); fix or remove this line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{file}:{lineno}: expected a JSON object per line, found {type(obj).__name__}")
        rows.append((lineno, obj))
    return rows


def read_csv(path: str | Path, delimiter: str | None = None) -> tuple[list[str], list[Row]]:
    """(header, rows with the line number each row starts on). ``delimiter`` defaults to tab for .tsv, else comma."""
    file = Path(path)
    sep = delimiter or ("\t" if file.suffix.lower() == ".tsv" else ",")
    reader = csv.reader(io.StringIO(_decode_text(file), newline=""), delimiter=sep)
    header: list[str] | None = None
    rows: list[Row] = []
    start = 1
    try:
        for fields in reader:
            lineno, start = start, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                dup = next((c for c, n in Counter(header).items() if n > 1), None)
                if dup is not None:
                    raise DataError(f"{file}:{lineno}: column '{dup}' appears twice in the header")
                continue
            if len(fields) != len(header):
                raise DataError(f"{file}:{lineno}: row has {len(fields)} fields but the header has {len(header)} "
                                f"({', '.join(header)}); quote fields that contain '{sep}'")
            rows.append((lineno, dict(zip(header, fields))))
    except csv.Error as exc:
        raise DataError(f"{file}:{reader.line_num}: malformed CSV ({exc}); fix or remove this line") from None
    if header is None:
        raise DataError(f"{file}: empty; expected a header line with column names")
    return header, rows


def _columns_error(where: str, found: Sequence[str], missing: str, option: str, hint: str = "") -> DataError:
    return DataError(f"{where}: no column '{missing}'.{did_you_mean(missing, list(found))} Columns found: "
                     f"{', '.join(found) or '(none)'}. Set {option}= to use another column.{hint}")


def _label_hint(columns: Sequence[str] | Mapping[str, Any], label_column: str | None) -> str:
    found = next((c for c in ("label", "class") if c in columns), None)
    return f" For classification set label_column='{found}'." if found and not label_column else ""


def _question(value: Any, *, required: bool, where: str) -> str | None:
    """A sample's own question; VQA rows need one, classification rows may carry one instead of the template."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError(f"{where}: the question is empty; VQA rows need a question")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: the question must be text, found {type(value).__name__}")
    return value


def _answer(value: Any, where: str) -> tuple[str, list[str] | None]:
    """The reference answer; a list of answers (VQAv2 style) gives the most common one plus the list."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: the answer is {value!r}; expected non-empty text")
    if isinstance(value, (str, int, float)):
        return str(value), None
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        answers = [str(v) for v in value]
        return Counter(answers).most_common(1)[0][0], answers
    raise DataError(f"{where}: the answer must be text or a list of texts, found {type(value).__name__}")


def _as_index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    return None


def _index_labels(values: list[Any], class_names: list[str] | None,
                  where: Callable[[int], str]) -> tuple[list[int], list[str]]:
    """Label values -> (indices, class list). Integers are indices; strings are class names, or indices
    written in digits when they name no class (CSV has only strings). Without ``class_names`` the class list
    is the sorted unique names, or "0".."max" when every label is an integer."""
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()) or not isinstance(v, (str, int, np.integer)):
            raise DataError(f"{where(i)}: label {v!r} is empty or not a class name / index")
    if class_names is None:
        indices = [_as_index(v) for v in values]
        if all(ix is not None for ix in indices):
            class_names = [str(c) for c in range(max([0, *indices]) + 1)]  # type: ignore[type-var]
        else:
            class_names = sorted({str(v).strip() for v in values})
    position = {n: i for i, n in enumerate(class_names)}
    labels: list[int] = []
    for i, v in enumerate(values):
        key = str(v).strip()
        if isinstance(v, str) and key in position:
            labels.append(position[key])
            continue
        ix = _as_index(v)
        if ix is None:
            shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
            raise BadSampleError(f"{where(i)}: label '{key}' is not a class name ({shown}); fix the label or "
                                 "class_names", sample_id=str(i))
        if not 0 <= ix < len(class_names):
            raise BadSampleError(f"{where(i)}: label {ix} is outside the class list (0..{len(class_names) - 1}); "
                                 "fix the label or class_names", sample_id=str(i))
        labels.append(ix)
    return labels, class_names


def _image_path(value: Any, base: Path, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: column '{column}' must hold an image path, found {value!r}")
    if "://" in value:
        raise DataError(f"{where}: '{value}' is a URL; unforget never downloads: fetch the images and give "
                        "local paths")
    file = Path(value.strip()).expanduser()
    file = file if file.is_absolute() else base / file
    if not file.is_file():
        raise DataError(f"{where}: image file {file} does not exist (column '{column}' is '{value}'; relative "
                        f"paths are read from {base})")
    return str(file)


def _table_dataset(
    file: Path, columns_seen: Sequence[str] | None, rows: list[Row], *, fmt: str, image_column: str,
    question_column: str, answer_column: str, label_column: str | None, split_column: str | None,
    id_column: str | None, class_names: Sequence[str] | str | None, image_root: str | None, split: str,
    splits: Sequence[str] | str | None, templates: Sequence[str] | None, name: str | None,
) -> ImageDataset:
    """Rows of a JSONL / CSV file -> ImageDataset. ``columns_seen`` is the CSV header (None for JSONL)."""
    base = file.parent
    if image_root is not None:
        base = file.parent / Path(image_root).expanduser()  # an absolute image_root replaces file.parent
        if not base.is_dir():
            raise ConfigError(f"{fmt}: image_root {base} is not a folder")
    required = [(image_column, "image_column")]
    if label_column:
        required.append((label_column, "label_column"))
    else:
        required += [(question_column, "question_column"), (answer_column, "answer_column")]
    for column, option in [*required, (split_column, "split_column"), (id_column, "id_column")]:
        if column is None:
            continue
        if columns_seen is not None and column not in columns_seen:
            raise _columns_error(f"{file}:1 (header)", columns_seen, column, option,
                                 _label_hint(columns_seen, label_column))
        for lineno, row in rows:
            if column not in row:
                raise _columns_error(f"{file}:{lineno}", list(row), column, option, _label_hint(row, label_column))
    if not rows:
        raise DataError(f"{file}: no rows; expected one {'JSON object' if fmt == 'jsonl' else 'row'} per sample")

    def where(lineno: int) -> str:
        return f"{file}:{lineno}"

    names: list[str] = []
    labels: list[int | None] = [None] * len(rows)
    if label_column:  # over all rows, so the class list does not depend on which splits are loaded
        given = _class_names_option(class_names, fmt)
        labels, names = _index_labels([row[label_column] for _, row in rows], given,  # type: ignore[assignment]
                                      lambda i: f"{where(rows[i][0])} (column '{label_column}')")
    row_splits: list[str] = []
    for lineno, row in rows:
        value = row[split_column] if split_column else split
        if not isinstance(value, (str, int)) or not str(value).strip():
            raise DataError(f"{where(lineno)}: column '{split_column}' (the split) is empty")
        row_splits.append(str(value).strip())
    chosen = _wanted_splits(list(dict.fromkeys(row_splits)), splits, f"{fmt} file {file}")
    used = {image_column, question_column, answer_column, label_column, split_column, id_column}
    out: dict[str, list[Sample]] = {s: [] for s in chosen}
    first_line: dict[str, int] = {}
    for (lineno, row), label, row_split in zip(rows, labels, row_splits):
        if row_split not in out:
            continue
        sample_id = str(row[id_column]).strip() if id_column else f"line-{lineno}"
        if not sample_id:
            raise DataError(f"{where(lineno)}: column '{id_column}' (the sample id) is empty")
        if sample_id in first_line:
            raise DataError(f"{where(lineno)}: sample id '{sample_id}' was already used on line "
                            f"{first_line[sample_id]}; ids must be unique")
        first_line[sample_id] = lineno
        image = _image_path(row[image_column], base, where(lineno), image_column)
        question = _question(row.get(question_column), required=label_column is None,
                             where=f"{where(lineno)} (column '{question_column}')")
        answer, answers = (None, None)
        if label_column is None or answer_column in row:
            answer, answers = _answer(row[answer_column], f"{where(lineno)} (column '{answer_column}')")
        meta = {k: v for k, v in row.items() if k not in used}
        meta["line"] = lineno
        if answers is not None:
            meta["answers"] = answers
        out[row_split].append(Sample(id=sample_id, image=image, label=label, question=question,
                                     answer=answer, meta=meta))
    ds = ImageDataset(
        name=name or file.stem, task="classification" if label_column else "vqa", splits=out, class_names=names,
        templates=_templates(templates) if label_column else list(templates or []), source=str(file),
        description=f"{fmt.upper()} rows from {file}",
    )
    ds.check_labels()
    return ds


@_register("jsonl", description="JSON lines of image path + question + answer (or label); paths relative to the file",
           source="local JSONL file")
def load_jsonl(
    path: str,
    *,
    image_column: str = "image",
    question_column: str = "question",
    answer_column: str = "answer",
    label_column: str | None = None,
    split_column: str | None = None,
    id_column: str | None = None,
    class_names: Sequence[str] | str | None = None,
    image_root: str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """One JSON object per line: ``{"image": "imgs/1.png", "question": "...", "answer": "..."}`` (VQA) or, with
    ``label_column``, a classification set whose class list is ``class_names`` or the sorted label values.
    Rows go to the split named by ``split_column``, else to ``split``; other columns are kept in ``meta``.
    Relative image paths are read from the file's folder, or from ``image_root`` (relative to that folder)."""
    file = _existing_file(path, "jsonl")
    return _table_dataset(
        file, None, read_jsonl(file), fmt="jsonl", image_column=image_column, question_column=question_column,
        answer_column=answer_column, label_column=label_column, split_column=split_column, id_column=id_column,
        class_names=class_names, image_root=image_root, split=split, splits=splits, templates=templates,
        name=name,
    )


@_register("csv", description="CSV/TSV rows of image path + question + answer (or label); paths relative to the file",
           source="local CSV file")
def load_csv(
    path: str,
    *,
    image_column: str = "image",
    question_column: str = "question",
    answer_column: str = "answer",
    label_column: str | None = None,
    split_column: str | None = None,
    id_column: str | None = None,
    class_names: Sequence[str] | str | None = None,
    image_root: str | None = None,
    delimiter: str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """A CSV file with a header line (tab-separated for .tsv); same columns and options as ``jsonl``, e.g. the
    miniImageNet split files: ``csv:mini/test.csv`` with image_column="filename", label_column="label",
    image_root="images"."""
    file = _existing_file(path, "csv")
    header, rows = read_csv(file, delimiter)
    return _table_dataset(
        file, header, rows, fmt="csv", image_column=image_column, question_column=question_column,
        answer_column=answer_column, label_column=label_column, split_column=split_column, id_column=id_column,
        class_names=class_names, image_root=image_root, split=split, splits=splits, templates=templates,
        name=name,
    )


# ---------------------------------------------------------------------------------------------------------- hf


@contextlib.contextmanager
def _datasets_offline() -> Iterator[None]:
    """Hold ``datasets`` offline while it builds from local files, so nothing is fetched."""
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


_PARQUET_SHARD = re.compile(r"^(?P<split>.+?)(?:-\d{5}-of-\d{5})?$")


def _parquet_splits(files: list[Path], root: Path, split: str) -> dict[str, list[Path]]:
    """Hub layouts: data/train-00000-of-00001.parquet, train.parquet, <split>/0000.parquet."""
    out: dict[str, list[Path]] = {}
    for file in files:
        if file.stem.isdigit():
            key = file.parent.name if file.parent != root else split
        else:
            key = _PARQUET_SHARD.match(file.stem)["split"]  # type: ignore[index]
        out.setdefault(key, []).append(file)
    return out


def _hf_tables(root: Path, split: str, splits: Sequence[str] | str | None) -> dict[str, tuple[Any, Any]]:
    """split -> (datasets.Features, pyarrow.Table) for a saved dataset, parquet files or an image folder."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"hf dataset {root}"
    if root.is_file() and root.suffix == ".parquet":
        parquet = {split: [root]}
    elif (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(root))
        except Exception as exc:  # arrow, json and file errors from a damaged save
            raise DataError(f"{root}: cannot read the saved dataset ({type(exc).__name__}: {exc}); save it again "
                            "with save_to_disk") from exc
        if isinstance(loaded, datasets.Dataset):
            loaded = {str(loaded.split) if loaded.split else split: loaded}
        chosen = _wanted_splits(list(loaded), splits, where)
        return {s: (loaded[s].features, loaded[s].with_format("arrow")[:]) for s in chosen}
    else:
        files = sorted(root.rglob("*.parquet"))
        parquet = _parquet_splits(files, root, split) if files else {}
    if parquet:
        tables = {}
        for s in _wanted_splits(list(parquet), splits, where):
            try:
                table = pa.concat_tables([pq.read_table(f) for f in parquet[s]])
            except Exception as exc:  # ArrowInvalid, schema mismatches between shards, OSError
                raise DataError(f"{root}: cannot read the parquet files of split '{s}' "
                                f"({', '.join(f.name for f in parquet[s])}): {exc}") from exc
            tables[s] = (datasets.Features.from_arrow_schema(table.schema), table)
        return tables
    if not any(_is_image(p) for p in root.rglob("*")):
        raise DataError(f"{root}: neither a save_to_disk folder (dataset_dict.json / state.json), parquet files, "
                        "nor image files for the imagefolder builder")
    with tempfile.TemporaryDirectory(prefix="unforget-hf-") as cache, _datasets_offline():
        try:
            built = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache, keep_in_memory=True)
        except Exception as exc:  # the builder's own errors (bad metadata.csv, mixed layouts...)
            raise DataError(f"{root}: the datasets imagefolder builder failed: {exc}") from exc
        chosen = _wanted_splits(list(built), splits, where)
        return {s: (built[s].features, built[s].with_format("arrow")[:]) for s in chosen}


def _hf_image(value: Any, base: Path, where: str) -> Any:
    """An Image-feature cell ({bytes, path}), raw bytes or a path -> bytes or an existing path."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        file = Path(value)
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise DataError(f"{where}: image file {file} does not exist")
        return str(file)
    raise DataError(f"{where}: no image (found {type(value).__name__}); the image column must hold images, "
                    "bytes or paths")


def _describe_columns(features: Any) -> str:
    return ", ".join(f"{k} ({getattr(v, '_type', type(v).__name__)})" for k, v in features.items())


@_register("hf", description="a datasets save_to_disk folder, parquet files, or an image folder via the imagefolder "
           "builder; offline", source="Hugging Face datasets on local disk")
def load_hf(
    path: str,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
    id_column: str | None = None,
    class_names: Sequence[str] | str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """A dataset from ``datasets``, read from disk only. The image column is the first ``Image`` feature (or
    ``image_column``); a ``ClassLabel`` column (or ``label_column``) makes it classification with the feature's
    names as classes, otherwise ``question_column`` / ``answer_column`` make it VQA. A single saved
    ``Dataset`` or parquet files without split names become the split ``split``."""
    import datasets

    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"hf: {root} does not exist; check the path after 'hf:' (datasets are read from disk only)")
    tables = _hf_tables(root, split, splits)
    base = root if root.is_dir() else root.parent
    given_names = _class_names_option(class_names, "hf")
    out: dict[str, list[Sample]] = {}
    names: list[str] | None = None
    task = "vqa"
    for split_name, (features, table) in tables.items():
        where = f"{root} split '{split_name}'"
        cols = list(features)
        img_col = image_column or next((c for c, f in features.items() if isinstance(f, datasets.Image)),
                                       next((c for c in ("image", "img") if c in cols), None))
        if img_col is None or img_col not in cols:
            raise DataError(f"{where}: no image column; columns: {_describe_columns(features)}. Set image_column=")
        lab_col = label_column or next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if lab_col is None and not (question_column in cols and answer_column in cols) and "label" in cols:
            lab_col = "label"
        if lab_col is not None and lab_col not in cols:
            raise _columns_error(where, cols, lab_col, "label_column")
        if lab_col is None:
            for column, option in ((question_column, "question_column"), (answer_column, "answer_column")):
                if column not in cols:
                    raise DataError(f"{where}: no label column (ClassLabel) and no '{column}' column; columns: "
                                    f"{_describe_columns(features)}. Set label_column= for classification or "
                                    f"{option}= for VQA.")
        if id_column and id_column not in cols:
            raise _columns_error(where, cols, id_column, "id_column")
        n = table.num_rows
        images = table.column(img_col).to_pylist()
        ids = ([str(v) for v in table.column(id_column).to_pylist()] if id_column
               else [f"{split_name}/{i}" for i in range(n)])
        questions = table.column(question_column).to_pylist() if question_column in cols else [None] * n
        labels: list[int | None] = [None] * n
        if lab_col is not None:
            task = "classification"
            values = table.column(lab_col).to_pylist()
            feature = features[lab_col]
            split_names = given_names or (list(feature.names) if isinstance(feature, datasets.ClassLabel) else None)
            if names is not None and split_names is None:
                split_names = names  # keep label strings of later splits on the first split's class list
            labels, split_names = _index_labels(  # type: ignore[assignment]
                values, split_names, lambda i, w=where, c=lab_col: f"{w} row {i} (column '{c}')")
            if names is not None and split_names != names:
                raise DataError(f"{where}: its class list differs from the other splits'; pass class_names")
            names = split_names
            answers: list[tuple[str | None, list[str] | None]] = [(None, None)] * n
        else:
            answers = [_answer(v, f"{where} row {i} (column '{answer_column}')")
                       for i, v in enumerate(table.column(answer_column).to_pylist())]
        samples = []
        for i in range(n):
            question = _question(questions[i], required=lab_col is None,
                                 where=f"{where} row {i} (column '{question_column}')")
            answer, all_answers = answers[i]
            samples.append(Sample(
                id=ids[i], image=_hf_image(images[i], base, f"{where} row {i}"), label=labels[i],
                question=question, answer=answer, meta={"answers": all_answers} if all_answers else {},
            ))
        if len(set(ids)) != n:
            dup = next(k for k, c in Counter(ids).items() if c > 1)
            raise DataError(f"{where}: sample id '{dup}' appears more than once in column '{id_column}'")
        out[split_name] = samples
    ds = ImageDataset(
        name=name or root.name, task=task, splits=out, class_names=names or [],  # type: ignore[arg-type]
        templates=_templates(templates) if task == "classification" else list(templates or []),
        source=str(root), description=f"Hugging Face dataset from {root}",
    )
    ds.check_labels()
    return ds
