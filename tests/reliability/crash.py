"""Helpers of the kill tests: run `unforget` in a child process that SIGKILLs itself at a commit point, and compare
two run folders by what they hold (records, metrics, tensors), not by timings.

A commit point is where a run's state on disk changes (a rename into place, a JSONL append); each is counted twice,
just before and just after, so "kill at k" covers half-written lines and temporary files left before a rename.

A child also counts the samples it puts through the model (:func:`install_sample_counter`): what a resumed run
really recomputed, measured apart from what it wrote, so a resume that re-evaluates everything or skips samples
shows even when the files it leaves look right."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# fields that measure time or say where a run resumed (run.json's "created": when the folder was first written);
# everything else (with the run folder's own path written as <run>) must match bit for bit
VOLATILE = {"seconds", "run_info", "resumed_from", "created"}
# written from the records above (reports, plots) or by a library with its own formatting (peft's README)
DERIVED = {".html", ".png", ".md"}


def install_commit_hooks(on_commit: Callable[[str], None]) -> Callable[[], None]:
    """Call ``on_commit(where)`` just before and just after every commit point: each ``os.replace`` / ``os.rename``
    ("replace-before <destination>": an atomic file write, a checkpoint folder put into place) and each
    ``JsonlAppender.write`` (one sample, probe or log line; "append-before <file>" is called with half of the line
    already written and flushed, as a power cut would leave it). Returns the function that removes the hooks."""
    import unforget.runs as runs

    replace, rename, append = os.replace, os.rename, runs.JsonlAppender.write

    def committing(original: Any, name: str) -> Any:
        def commit(src: Any, dst: Any, *a: Any, **kw: Any) -> Any:
            on_commit(f"{name}-before {dst}")
            result = original(src, dst, *a, **kw)
            on_commit(f"{name}-after {dst}")
            return result
        return commit

    def write(self: Any, record: dict[str, Any]) -> None:
        line = runs.dumps_strict(record, ensure_ascii=False)
        position = self._fh.tell()
        self._fh.write(line[: max(1, len(line) // 2)])
        self._fh.flush()
        on_commit(f"append-before {self.path}")
        self._fh.seek(position)  # not killed: take the half line back and write the record whole
        self._fh.truncate()
        append(self, record)
        on_commit(f"append-after {self.path}")

    os.replace, os.rename = committing(replace, "replace"), committing(rename, "rename")
    runs.JsonlAppender.write = write

    def remove() -> None:
        os.replace, os.rename, runs.JsonlAppender.write = replace, rename, append
    return remove


def install_sample_counter(counts: dict[str, int]) -> Callable[[], None]:
    """Count in ``counts["evaluated"]`` every sample the evaluator puts through the model: the images ranked by
    ``ranking.rank_classes`` (looked up at each call) and the requests of the evaluator's ``generate_answers``.
    Returns the function that removes the wrappers."""
    import unforget.evaluation.evaluator as evaluator
    import unforget.evaluation.ranking as ranking

    rank, generate = ranking.rank_classes, evaluator.generate_answers
    counts.setdefault("evaluated", 0)

    def counted_rank(lm: Any, class_names: Any, images: Any, *a: Any, **kw: Any) -> Any:
        out = rank(lm, class_names, images, *a, **kw)
        counts["evaluated"] += len(out)
        return out

    def counted_generate(lm: Any, requests: Any, *a: Any, **kw: Any) -> Any:
        out = generate(lm, requests, *a, **kw)
        counts["evaluated"] += len(out)
        return out

    ranking.rank_classes, evaluator.generate_answers = counted_rank, counted_generate

    def remove() -> None:
        ranking.rank_classes, evaluator.generate_answers = rank, generate
    return remove


@dataclass
class RunResult:
    """What a run did: its exit status (-9: killed), the commit points it passed and the samples it evaluated
    (both None when it was killed: a killed process reports nothing)."""

    rc: int
    commit_points: int | None = None
    evaluated: int | None = None


def run_child(args: list[Any], kill_at: int = 0, only: tuple[str, ...] = ()) -> RunResult:
    """``unforget ARGS`` in a forked child process (torch and transformers already imported: no interpreter start)
    that SIGKILLs itself at the ``kill_at``-th commit point whose name contains every text of ``only`` (0: never;
    ``only=("append-before", "/x/samples.jsonl")`` kills while writing the ``kill_at``-th record of that file,
    leaving half of it). A child that ends on its own reports its commit points and evaluated samples."""
    fd, report = tempfile.mkstemp(suffix=".json", prefix="unforget-child-")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        rc = 3
        try:
            from unforget.cli import main

            counts = {"commit_points": 0, "matching": 0}

            def maybe_die(where: str) -> None:
                counts["commit_points"] += 1
                if all(text in where for text in only):
                    counts["matching"] += 1
                    if counts["matching"] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)

            install_commit_hooks(maybe_die)
            install_sample_counter(counts)
            rc = main([str(a) for a in args])
            Path(report).write_text(json.dumps(counts))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    try:
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        text = Path(report).read_text()
        counts = json.loads(text) if text else {}
        return RunResult(rc, counts.get("commit_points"), counts.get("evaluated"))
    finally:
        os.unlink(report)


def run_counting(args: list[Any]) -> RunResult:
    """Run ``args`` in this process to the end (the reference run), counting its commit points and evaluated
    samples. Running it here also imports everything a run needs once, so the children forked after it start
    at once (a report's plotting and transformers' processors take seconds to import)."""
    from unforget.cli import main

    counts = {"commit_points": 0, "evaluated": 0}
    remove_hooks = install_commit_hooks(lambda where: counts.__setitem__("commit_points", counts["commit_points"] + 1))
    remove_counter = install_sample_counter(counts)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        remove_counter()
        remove_hooks()
    return RunResult(0, counts["commit_points"], counts["evaluated"])


def kill_at(args: list[Any], k: int, only: tuple[str, ...] = ()) -> None:
    """Run ``args`` killed at its k-th commit point (of those named with every text of ``only``); it must really
    have died by SIGKILL."""
    rc = run_child(args, kill_at=k, only=only).rc
    assert rc == -signal.SIGKILL, f"the kill at commit point {k} {only} did not land: exit status {rc}"


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
