import json

import pytest

from unforget.errors import DataError
from unforget.runs import JsonlAppender, RunDir, atomic_write_json, read_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(tmp_path / "m.json", {"a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_truncated_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "samples.jsonl"
    with JsonlAppender(path) as app:
        app.write({"id": "a"})
        app.write({"id": "b"})
    with open(path, "a") as fh:
        fh.write('{"id": "c", "corr')  # power loss mid-line
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    with JsonlAppender(path) as app:  # appending repairs the tail first
        app.write({"id": "c"})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_unterminated_but_parseable_last_line_is_not_trusted(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    assert [r["id"] for r in read_jsonl(path)] == ["a"]


def test_damaged_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a"}\n{oops\n{"id": "c"}\n')
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(path)


def test_run_dir_files(tmp_path):
    run = RunDir(tmp_path / "r")
    assert not run.is_done()
    run.write_metrics({"acc": 0.5})
    assert run.read_metrics() == {"acc": 0.5}
    run.mark_done()
    assert run.is_done()
