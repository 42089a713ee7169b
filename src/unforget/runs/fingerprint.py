"""Fingerprints cheap enough for a 7B checkpoint and a 60,000-image folder, yet different for two fine-tunes.

Two checkpoints of one architecture have the same file sizes and safetensors headers, so sizes and headers alone
cannot tell epoch 1 from epoch 2. Each weights file therefore also contributes the sha256 of a few evenly spaced
64 KiB windows of its bytes (16 per file: 1 MiB read per shard): a fine-tune moves essentially every tensor, so the
windows differ. Image folders contribute each file's size plus the full bytes of up to 256 evenly spaced files.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable

WINDOW = 64 * 1024
WINDOWS_PER_FILE = 16
# files that do not determine a model's outputs: caches, READMEs, training logs
_SKIP_SUFFIXES = (".md", ".txt", ".log", ".lock", ".png", ".jpg", ".html")


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets); b"" when it is not one."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return b""
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                return b""
            return fh.read(n)
    except OSError:
        return b""


def sampled_digest(path: Path, windows: int = WINDOWS_PER_FILE, window: int = WINDOW) -> str:
    """sha256 of the file's size and ``windows`` evenly spaced byte windows (the whole file when it is small)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= windows * window:
            h.update(fh.read())
        else:
            step = (size - window) / (windows - 1)
            for i in range(windows):
                fh.seek(int(i * step))
                h.update(fh.read(window))
    return h.hexdigest()


def weights_fingerprint(path: str | Path) -> dict[str, Any]:
    """The fingerprint of a model folder or file: per file its size, its safetensors header's hash and a sampled
    digest of its bytes; ``digest`` sums them up. Hidden files and documentation are left out."""
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and not p.name.lower().endswith(_SKIP_SUFFIXES))
    entries = []
    for f in files:
        entry: dict[str, Any] = {"file": f.name if root.is_file() else str(f.relative_to(root)),
                                 "bytes": f.stat().st_size, "sampled_sha256": sampled_digest(f)}
        if f.suffix == ".safetensors":
            entry["header_sha256"] = hashlib.sha256(safetensors_header(f)).hexdigest()
        entries.append(entry)
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    return {"digest": digest, "files": len(entries), "bytes": sum(e["bytes"] for e in entries)}


def content_digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
