"""Guarantee 7 (and 2): a disk that fills up while writing leaves the previous results intact. The writers are
patched to fail with ENOSPC part-way (a write that lands half a line, an fsync that fails), as a full disk does."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

import unforget.runs.io as runs  # the writers live in unforget.runs.io
from tests.finetune_helpers import build_tiny_llava, register_datasets
from unforget.cli import main
from unforget.runs import JsonlAppender, RunDir, atomic_write_json, read_jsonl


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_atomic_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    atomic_write_json(tmp_path / "metrics.json", {"accuracy": 0.5})

    def full(fd):
        raise enospc()

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(OSError) as err:
        atomic_write_json(tmp_path / "metrics.json", {"accuracy": 0.9, "padding": "x" * 100_000})
    assert err.value.errno == errno.ENOSPC
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


class HalfThenFull:
    """A file that takes half of the next line, then reports the disk full."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, text):
        self.fh.write(text[: len(text) // 2])
        self.fh.flush()
        raise enospc()

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_a_failed_append_keeps_every_earlier_record_and_the_torn_line_is_dropped(tmp_path):
    path = tmp_path / "samples.jsonl"
    app = JsonlAppender(path)
    for i in range(3):
        app.write({"id": i})
    app._fh = HalfThenFull(app._fh)
    with pytest.raises(OSError):
        app.write({"id": 3, "answer": "a long answer that will not fit"})
    app._fh.fh.close()
    assert [r["id"] for r in read_jsonl(path)] == [0, 1, 2]  # the half line is never parsed as a result
    with JsonlAppender(path) as again:  # the rerun repairs the tail and appends on a fresh line
        again.write({"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_disk_full_mid_eval_keeps_earlier_answers_and_the_rerun_matches_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                                              capsys):
    torch.set_num_threads(1)
    register_datasets()
    build_tiny_llava(tmp_path / "model")
    args = ["eval", "--model", str(tmp_path / "model"), "--device", "cpu", "--datasets", "ft-colours-vqa",
            "--split", "train", "--limit", "6", "--batch-size", "1", "--max-new-tokens", "2", "--out"]
    assert main([*args, str(tmp_path / "reference")]) == 0
    out = tmp_path / "full"
    original = JsonlAppender.write
    calls = {"n": 0}

    def fills_up_at_the_fourth(self, record):
        calls["n"] += 1
        if calls["n"] == 4:
            self._fh = HalfThenFull(self._fh)
        original(self, record)

    monkeypatch.setattr(JsonlAppender, "write", fills_up_at_the_fourth)
    assert main([*args, str(out)]) == 1  # one line naming the error and the way on, no traceback
    message = capsys.readouterr().out
    assert os.strerror(errno.ENOSPC) in message and "rerun the same command" in message
    assert len(read_jsonl(out / "samples.jsonl")) == 3 and not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert main([*args, str(out)]) == 0  # space freed: the same command finishes the work
    ref, got = (RunDir(tmp_path / f).samples() for f in ("reference", "full"))
    assert [r["id"] for r in got] == [r["id"] for r in ref]
    assert [(r["answer"], r["correct"]) for r in got] == [(r["answer"], r["correct"]) for r in ref]
    a, b = (json.loads((tmp_path / f / "metrics.json").read_text())["datasets"] for f in ("reference", "full"))
    for name in a:
        for key in ("n", "accuracy", "unjudged", "confusion"):
            assert a[name][key] == b[name][key]
