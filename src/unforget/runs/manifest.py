"""``run.json``: what a run folder holds - its kind, who wrote it, and the identity of everything that determines
its numbers (model and adapter with weights fingerprints, datasets with content fingerprints, split, sampling, mode,
prompt template, decoding settings, judges with their identity).

A command pointed at an existing folder resumes only when the identity it would write equals the one stored;
otherwise it stops before any work, naming every field that differs and the two ways on. Nothing secret is ever
part of an identity (judge API keys are not: the endpoint and model name are).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from ..errors import ConfigError
from .io import RunDir, atomic_write_json, read_json, strict_json
from .layout import CONFIG, MANIFEST

SCHEMA = 1


class RunIdentityError(ConfigError):
    """A run folder holds a different run than the one asked for (or one whose identity is unknown)."""


@dataclass
class RunManifest:
    """The content of ``run.json``. ``identity`` is nested JSON; two runs are the same run when their identities
    are equal after :func:`strict_json` (so a tuple equals a list and NaN equals None)."""

    kind: str
    identity: dict[str, Any]
    unforget_version: str = ""
    git_sha: str | None = None
    created: str = ""
    parent: str | None = None  # a study's sub-run: the kind of the study folder above it
    schema: int = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)  # provenance that does not decide resuming

    def to_dict(self) -> dict[str, Any]:
        return strict_json(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunManifest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The git commit of the unforget source tree, when it is a checkout (None for an installed wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def new_manifest(kind: str, identity: Mapping[str, Any], *, parent: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> RunManifest:
    return RunManifest(kind=kind, identity=strict_json(dict(identity)), unforget_version=__version__,
                       git_sha=git_sha(), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       parent=parent, extra=strict_json(dict(extra or {})))


def read_manifest(folder: str | Path) -> RunManifest | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "kind" not in data or "identity" not in data:
        raise RunIdentityError(f"{path}: not a run manifest (no kind / identity); delete it or choose another --out")
    return RunManifest.from_dict(data)


def write_manifest(folder: str | Path, manifest: RunManifest) -> Path:
    path = Path(folder) / MANIFEST
    atomic_write_json(path, manifest.to_dict())
    return path


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists are compared whole)."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def identity_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, stored value, wanted value) for every dotted field whose value differs; absent is ``<absent>``."""
    a, b = flatten(strict_json(dict(stored))), flatten(strict_json(dict(wanted)))
    missing = "<absent>"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b)) if a.get(k, missing)
            != b.get(k, missing)]


def _short(value: Any, width: int = 90) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_resumable(folder: str | Path, kind: str, identity: Mapping[str, Any]) -> RunManifest | None:
    """Raise :class:`RunIdentityError` unless ``folder`` is absent, empty, or holds a run of this kind and identity.
    Returns the stored manifest when there is one (a resume)."""
    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise RunIdentityError(f"{folder} exists and is not a folder: choose another --out")
    ways = (f"Either write to another folder (--out NEW_FOLDER), or pass --overwrite to delete {folder} and start "
            "again.")
    stored = read_manifest(folder)
    if stored is None:
        # a dot file is another process's atomic write in progress (.run.json.*.tmp), not a result
        if any(not p.name.startswith(".") for p in folder.iterdir()):
            raise RunIdentityError(
                f"{folder} is not empty but has no {MANIFEST}: it was not written by this version of unforget, so "
                f"whether its results belong to this run cannot be checked. {ways}")
        return None
    if stored.kind != kind:
        raise RunIdentityError(f"{folder} holds a '{stored.kind}' run, not a '{kind}' run. {ways}")
    diffs = identity_differences(stored.identity, identity)
    if diffs:
        lines = "\n".join(f"  {k}: in the folder {_short(old)}, now {_short(new)}" for k, old, new in diffs)
        raise RunIdentityError(
            f"{folder} holds a '{kind}' run made with another config, so its results cannot be resumed into this "
            f"one ({len(diffs)} field(s) differ):\n{lines}\n{ways}")
    return stored


def clear_run(folder: str | Path) -> None:
    """Delete a run folder unforget wrote (``--overwrite``); a non-empty folder that is not one is refused."""
    folder = Path(folder)
    if not folder.exists():
        return
    if folder.is_dir() and any(folder.iterdir()) and not ((folder / MANIFEST).is_file() or (folder / CONFIG).is_file()):
        raise RunIdentityError(f"--overwrite: {folder} holds files but no {MANIFEST} or {CONFIG}; it does not look "
                               "like a run folder, so it is left alone. Delete it yourself or choose another --out.")
    if folder.is_dir():
        shutil.rmtree(folder)
    else:
        folder.unlink()


def prepare_run(folder: str | Path, kind: str, identity: Mapping[str, Any], *, overwrite: bool = False,
                parent: str | None = None, extra: Mapping[str, Any] | None = None) -> RunDir:
    """Check (or clear, with ``overwrite``), create the folder and write its ``run.json``; the one way a command
    opens the folder it writes. Call it after every name was resolved: a run that fails its checks leaves nothing."""
    if overwrite:
        clear_run(folder)
    stored = check_resumable(folder, kind, identity)
    run = RunDir(folder)
    if stored is None:
        write_manifest(run.path, new_manifest(kind, identity, parent=parent, extra=extra))
    return run


def ensure_manifest(folder: str | Path, kind: str, identity: Mapping[str, Any], *, parent: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> RunDir:
    """A study's sub-run: write its ``run.json`` when absent (the study folder's own check guards resuming)."""
    run = RunDir(folder)
    if read_manifest(run.path) is None:
        write_manifest(run.path, new_manifest(kind, identity, parent=parent, extra=extra))
    return run


def identity_digest(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(strict_json(dict(identity)), sort_keys=True).encode()).hexdigest()


def sub_run(root: str | Path, relative: str | Path, kind: str) -> RunDir:
    """A study's sub-run folder (its base evaluation, an epoch, a fine-tune) with its own ``run.json``: the kind,
    the study it belongs to and the digest of the study's identity (which the study folder's check guards)."""
    root = Path(root)
    parent = read_manifest(root)
    identity = {"part": str(relative)}
    if parent is not None:
        identity.update(study=parent.kind, study_identity_sha256=identity_digest(parent.identity))
    return ensure_manifest(root / relative, kind, identity, parent=parent.kind if parent else None)
