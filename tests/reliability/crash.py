"""Helpers of the kill tests: run `unforget` in a child that SIGKILLs itself at a commit point, and compare two run
folders by what they hold (records, metrics, tensors), not by timings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = Path(__file__).resolve().parent / "crash_child.py"
# fields that measure time or say where a run resumed; everything else (with the run folder's own path written as
# <run>) must match bit for bit
VOLATILE = {"seconds", "run_info", "resumed_from"}
# written from the records above (reports, plots) or by a library with its own formatting (peft's README)
DERIVED = {".html", ".png", ".md"}


def run_cli(args: list[str], kill_at: int = 0, events_file: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "UNFORGET_KILL_AT": str(kill_at)}
    if events_file is not None:
        env["UNFORGET_EVENTS_FILE"] = str(events_file)
    return subprocess.run([sys.executable, str(CHILD), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_counting(args: list[str], monkeypatch: Any) -> int:
    """Run ``args`` in this process to the end (the reference run); the number of commit points it passed, counted
    as the child counts them."""
    import unforget.runs as runs
    from unforget.cli import main

    count = [0]

    def counted(original: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            count[0] += 2
            return original(*a, **kw)
        return call

    monkeypatch.setattr(os, "replace", counted(os.replace))
    monkeypatch.setattr(os, "rename", counted(os.rename))
    monkeypatch.setattr(runs.JsonlAppender, "write", counted(runs.JsonlAppender.write))
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        monkeypatch.undo()
    return count[0]


def kill_at(args: list[str], k: int) -> subprocess.CompletedProcess:
    """Run ``args`` killed at its k-th commit point; it must really have died by SIGKILL."""
    killed = run_cli(args, kill_at=k)
    assert killed.returncode == -9, f"kill at {k} did not land: rc {killed.returncode}\n{killed.stderr[-3000:]}"
    return killed


def kill_then_finish(args: list[str], kill_points: list[int]) -> list[subprocess.CompletedProcess]:
    """Run ``args`` killed at each of ``kill_points`` in turn (counted from the start of that rerun), then once
    more without a kill, which must succeed."""
    runs = [kill_at(args, k) for k in kill_points]
    final = run_cli(args)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    runs.append(final)
    return runs


def _scrub(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<run>")
    return value


def _tensor_digest(path: Path) -> dict[str, str]:
    from safetensors.torch import load_file

    return {k: hashlib.sha256(t.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
            .hexdigest() for k, t in sorted(load_file(str(path)).items())}


def is_temporary(path: Path) -> bool:
    return path.name.endswith(".tmp") or any(part.startswith(".tmp-") for part in path.parts)


def fingerprint(folder: Path) -> dict[str, Any]:
    """Every file of a run folder as comparable content: JSON / JSONL scrubbed of timings (JSONL records in file
    order), safetensors as per-tensor digests, other files as bytes. A temporary file a kill left before its rename
    is no result (nothing reads it) and is left out."""
    out: dict[str, Any] = {}
    root = str(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if is_temporary(path):
            continue
        if path.suffix in DERIVED:
            out[rel] = "derived"
        elif path.suffix == ".jsonl":
            out[rel] = [_scrub(json.loads(line), root) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            out[rel] = _scrub(json.loads(path.read_text()), root)
        elif path.suffix == ".safetensors":
            out[rel] = _tensor_digest(path)
        elif path.name == "config.yaml":
            out[rel] = path.read_text().replace(root, "<run>")
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_same_run(a: Path, b: Path) -> None:
    fa, fb = fingerprint(a), fingerprint(b)
    assert sorted(fa) == sorted(fb), f"files differ: only in {a.name}: {sorted(set(fa) - set(fb))}, " \
                                     f"only in {b.name}: {sorted(set(fb) - set(fa))}"
    for rel in fa:
        assert fa[rel] == fb[rel], f"{rel} differs after kill and rerun"
