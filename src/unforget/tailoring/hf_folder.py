"""Write a model as a Hugging Face folder: the base folder's config / tokenizer / processor files plus
safetensors shards (``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` + index).

Tensors are streamed one shard at a time; every file is written under a temporary name and renamed into
place.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from ..errors import ConfigError
from ..runs import dumps_strict
from .checkpoints import SAFETENSORS_INDEX, Checkpoint

WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pt|pth|h5|msgpack|ckpt)$|.*\.index\.json$")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

TensorTransform = Callable[[str, torch.Tensor], torch.Tensor]


def parse_size(size: int | str) -> int:
    """``5GB`` / ``500MiB`` / bytes -> bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMG]I?B|B)?\s*", size.upper())
    if not match:
        raise ConfigError(f"cannot read the shard size '{size}' (e.g. 5GB, 500MiB, 1000000)")
    return int(float(match[1]) * _UNITS[match[2] or "B"])


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def prepare_output_folder(out_folder: Path, *, source_folder: Path | None, overwrite: bool) -> None:
    out_folder.mkdir(parents=True, exist_ok=True)
    if source_folder is not None and out_folder.resolve() == source_folder.resolve():
        raise ConfigError(f"{out_folder} is the base model's own folder; write the tailored model elsewhere")
    stale = [p for p in out_folder.iterdir() if p.is_file() and WEIGHT_FILE.match(p.name)]
    if stale and not overwrite:
        raise ConfigError(f"{out_folder} already holds weights ({stale[0].name}); choose an empty folder or overwrite")
    for path in stale:
        path.unlink()


def copy_model_files(source_folder: Path, out_folder: Path) -> list[str]:
    """Copy config, generation config, tokenizer, processor and chat-template files (everything but weights)."""
    copied = []
    for path in sorted(source_folder.iterdir()):
        if path.is_file() and not WEIGHT_FILE.match(path.name):
            _atomic_write_bytes(out_folder / path.name, lambda tmp, src=path: shutil.copyfile(src, tmp))
            copied.append(path.name)
    return copied


def write_hf_folder(
    checkpoint: Checkpoint,
    out_folder: str | Path,
    *,
    transform: TensorTransform | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Write every tensor of ``checkpoint`` (through ``transform(key, tensor)``) as a HF folder."""
    out = Path(out_folder)
    prepare_output_folder(out, source_folder=checkpoint.folder, overwrite=overwrite)
    if checkpoint.folder is not None:
        copy_model_files(checkpoint.folder, out)
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    shard_bytes = 0
    for key in checkpoint.keys():
        size = checkpoint.info(key).nbytes
        if shards[-1] and shard_bytes + size > limit:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(key)
        shard_bytes += size
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    total = 0
    for name, keys in zip(names, shards):
        tensors = {}
        for key in keys:
            tensor = checkpoint.get(key)
            if transform is not None:
                tensor = transform(key, tensor)
            tensors[key] = tensor.contiguous()
            total += tensor.numel() * tensor.element_size()
            weight_map[key] = name
        _atomic_write_bytes(out / name, lambda tmp, t=tensors: save_file(t, str(tmp), metadata={"format": "pt"}))
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _atomic_write_bytes(out / SAFETENSORS_INDEX, lambda tmp: tmp.write_text(dumps_strict(index, indent=2)))
    return out
