"""Helpers of the kill tests: run `unforget` in a child process that SIGKILLs itself at a commit point, and compare
two run folders by what they hold (records, metrics, tensors), not by timings.

A commit point is where a run's state on disk changes (a rename into place, a JSONL append); each is counted twice,
just before and just after, so "kill at k" covers half-written lines and temporary files left before a rename."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

# fields that measure time or say where a run resumed; everything else (with the run folder's own path written as
# <run>) must match bit for bit
VOLATILE = {"seconds", "run_info", "resumed_from"}
# written from the records above (reports, plots) or by a library with its own formatting (peft's README)
DERIVED = {".html", ".png", ".md"}


def install_commit_hooks(on_commit: Callable[[str], None]) -> Callable[[], None]:
    """Call ``on_commit(where)`` just before and just after every commit point: each ``os.replace`` / ``os.rename``
    (an atomic file write, a checkpoint folder put into place) and each ``JsonlAppender.write`` (one sample, probe
    or log line; "append-before" is called with half of the line already written and flushed, as a power cut
    would leave it). Returns the function that removes the hooks."""
    import unforget.runs as runs

    replace, rename, append = os.replace, os.rename, runs.JsonlAppender.write

    def committing(original: Any, name: str) -> Any:
        def commit(*a: Any, **kw: Any) -> Any:
            on_commit(f"{name}-before")
            result = original(*a, **kw)
            on_commit(f"{name}-after")
            return result
        return commit

    def write(self: Any, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=runs._json_default, ensure_ascii=False)
        position = self._fh.tell()
        self._fh.write(line[: max(1, len(line) // 2)])
        self._fh.flush()
        on_commit("append-before")
        self._fh.seek(position)  # not killed: take the half line back and write the record whole
        self._fh.truncate()
        append(self, record)
        on_commit("append-after")

    os.replace, os.rename = committing(replace, "replace"), committing(rename, "rename")
    runs.JsonlAppender.write = write

    def remove() -> None:
        os.replace, os.rename, runs.JsonlAppender.write = replace, rename, append
    return remove


def run_cli(args: list[Any], kill_at: int = 0) -> int:
    """``unforget ARGS`` in a forked child process (torch and transformers already imported: no interpreter start)
    that SIGKILLs itself at its ``kill_at``-th commit point (0: never). Returns the exit status, -9 when killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        rc = 3
        try:
            from unforget.cli import main

            count = [0]

            def maybe_die(where: str) -> None:
                count[0] += 1
                if count[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            install_commit_hooks(maybe_die)
            rc = main([str(a) for a in args])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_counting(args: list[Any]) -> int:
    """Run ``args`` in this process to the end (the reference run); the number of commit points it passed."""
    from unforget.cli import main

    count = [0]
    remove = install_commit_hooks(lambda where: count.__setitem__(0, count[0] + 1))
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        remove()
    return count[0]


def kill_at(args: list[Any], k: int) -> None:
    """Run ``args`` killed at its k-th commit point; it must really have died by SIGKILL."""
    rc = run_cli(args, kill_at=k)
    assert rc == -signal.SIGKILL, f"the kill at commit point {k} did not land: exit status {rc}"


def kill_then_finish(args: list[Any], kill_points: list[int]) -> None:
    """Run ``args`` killed at each of ``kill_points`` in turn (counted from the start of that rerun), then once
    more without a kill, which must succeed."""
    for k in kill_points:
        kill_at(args, k)
    assert run_cli(args) == 0, "the rerun after the kills failed"


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
