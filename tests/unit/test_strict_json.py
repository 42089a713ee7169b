"""Strict JSON in what unforget writes: the checker the study tests use catches a bare NaN / Infinity, and the
case the issue found (judge agreement undefined -> a bare NaN in metrics.json) now writes null."""

from __future__ import annotations

import json

import pytest

from tests.strict_json import assert_strict_json, non_strict_json
from unforget.cli import main


def test_the_checker_finds_bare_nan_and_infinity_in_json_and_jsonl(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps({"kappa": None, "x": [1.5, "NaN"]}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "metrics.json").write_text(json.dumps({"kappa": float("nan")}))
    (tmp_path / "sub" / "samples.jsonl").write_text('{"a": 1}\n{"loss": Infinity}\n')
    (tmp_path / "notes.txt").write_text("NaN")  # not JSON: not checked
    checked, problems = non_strict_json(tmp_path)
    assert checked == 3
    assert problems == ["sub/metrics.json:1: bare NaN (not JSON)", "sub/samples.jsonl:2: bare Infinity (not JSON)"]
    with pytest.raises(AssertionError, match="sub/metrics.json"):
        assert_strict_json(tmp_path)


def test_an_undefined_kappa_is_written_as_null(tmp_path, capsys):
    """Every answer right and the judge agreeing throughout: kappa is 0/0. The folder parses strictly."""
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"g{i}", "dataset": "digits", "answer": str(i), "reference": str(i),
                                        "correct": True}) + "\n" for i in range(3)))
    out = tmp_path / "run"
    assert main(["judge", "validate", "--gold", str(gold), "--judges", "exact", "--resamples", "20",
                 "--out", str(out)]) == 0
    assert assert_strict_json(out) >= 2  # metrics.json, samples.jsonl (and run.json where written)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["judges"]["exact"]["kappa"]["value"] is None and doc["judges"]["exact"]["accuracy"]["value"] == 1.0
