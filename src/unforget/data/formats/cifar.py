"""``cifar10`` and ``cifar100``: the official python pickle folders, read through a restricted unpickler."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import DataError
from ..types import ImageDataset, Sample
from ._common import check_label_array, existing_dir, name_text, register_format, templates_or_default, wanted_splits
from .safe_pickle import ForbiddenGlobal, safe_unpickle


def read_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR batch / meta pickle safely; returns its dict with keys decoded to str."""
    file = Path(path)
    try:
        obj = safe_unpickle(file.read_bytes())
    except ForbiddenGlobal as exc:
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
    root = existing_dir(path, fmt)
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
    filenames = [name_text(f, str(file)) for f in raw_names] if isinstance(raw_names, list) else []
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
    class_names = [name_text(n, str(root / meta_name)) for n in meta[names_key]]
    available = [s for s, fs in split_files.items() if any((root / f).is_file() for f in fs)]
    out: dict[str, list[Sample]] = {}
    for split in wanted_splits(available, splits, f"{fmt} folder {root}"):
        missing = [f for f in split_files[split] if not (root / f).is_file()]
        if missing:
            raise DataError(f"{root}: the {split} split needs {', '.join(missing)}, which is missing; "
                            f"download and extract the archive again")
        samples: list[Sample] = []
        for fname in split_files[split]:
            images, labels, filenames = _cifar_batch(root / fname, label_key)
            check_label_array(labels, len(class_names), str(root / fname),
                               f"the file does not match {meta_name}")
            for i in range(len(labels)):
                meta_i = {"filename": filenames[i]} if filenames else {}
                samples.append(Sample(id=f"{split}/{len(samples)}", image=images[i], label=int(labels[i]),
                                      meta=meta_i))
        out[split] = samples
    ds = ImageDataset(
        name=name or fmt, task="classification", splits=out, class_names=class_names,
        templates=templates_or_default(templates), source=str(root),
        description=f"{fmt.upper()} python batches from {root}",
    )
    ds.check_labels()
    return ds


@register_format("cifar10",
                 description="CIFAR-10 python pickle folder (cifar-10-batches-py), read without running code",
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


@register_format("cifar100", description="CIFAR-100 python pickle folder (cifar-100-python), fine or coarse labels",
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
