"""Atomic file IO of run folders: every file is written to a temporary name and renamed into place; JSONL files
are appended line by line and fsynced, and a truncated last line (power loss) is dropped on read, never parsed as a
result. JSON is strict: NaN and infinities are written as null (Python's json would write the bare ``NaN`` that
strict parsers reject).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..config import dump_yaml, to_dict
from ..errors import DataError
from .secrets import redact_secrets
from .layout import CONFIG, DONE, METRICS, SAMPLES

log = logging.getLogger(__name__)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively, and numpy / Path / objects
    with ``to_dict`` converted: what :func:`dumps_strict` writes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return strict_json(_json_default(obj))


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON text a strict parser accepts: non-finite floats become null, ``allow_nan=False`` guards the rest."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as strict JSON, its secrets redacted (:mod:`.secrets`: a judge's key in a config never lands on disk)."""
    atomic_write_text(path, dumps_strict(redact_secrets(strict_json(obj), everywhere=False), indent=2,
                                         sort_keys=False) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np  # start-up time: the CLI imports runs; numpy loads only when a run writes a numpy value

    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); the file is damaged - delete it to recompute") from exc


class JsonlAppender:
    """Appends one JSON object per line, flushed and fsynced so a crash loses at most the line being written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(dumps_strict(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _repair_tail(path: Path) -> None:
    """Cut a partial last line (no trailing newline) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted write", path, len(data) - cut)
        fh.truncate(cut)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete records. A truncated last line is dropped; a damaged line elsewhere is an error."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a cut can split a multi-byte character
            if last and not complete:
                log.warning("%s: ignoring a truncated last line (line %d)", path, i + 1)
                return
            raise DataError(f"{path}, line {i + 1}: damaged record ({exc}); delete the line to recompute it") from exc
        if last and not complete:
            # parsed, but the newline never made it: the write may not have finished - treat as truncated
            log.warning("%s: ignoring an unterminated last line (line %d)", path, i + 1)
            return
        yield rec


class RunDir:
    """One run folder. Studies and evaluators write through this class only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def write_config(self, config: Any) -> None:
        """config.yaml, its secrets redacted (:mod:`.secrets`)."""
        atomic_write_text(self.path / CONFIG, dump_yaml(redact_secrets(to_dict(config))))

    def write_metrics(self, metrics: Any) -> None:
        atomic_write_json(self.metrics_path, metrics)

    def read_metrics(self) -> Any | None:
        return read_json(self.metrics_path) if self.metrics_path.exists() else None

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.samples_path)

    def rewrite_samples(self, records: list[dict[str, Any]], name: str = SAMPLES) -> None:
        """Replace the whole file in one atomic rename (rejudging); never while an appender is open on it."""
        atomic_write_text(self.path / name, "".join(dumps_strict(r, ensure_ascii=False) + "\n" for r in records))

    def appender(self, name: str = SAMPLES) -> JsonlAppender:
        return JsonlAppender(self.path / name)

    def is_done(self) -> bool:
        return (self.path / DONE).exists()

    def mark_done(self) -> None:
        atomic_write_text(self.path / DONE, "")
