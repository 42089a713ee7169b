"""Guarantee 1: kill -9 at any point of a study or of `unforget tailor`, rerun the same command, get the results of
an uninterrupted run: no sample counted twice, no finished run redone.

A forked child process SIGKILLs itself at the k-th commit point (a rename into place or a JSONL append, before or
after it; before an append it leaves half a line). Each test kills the same command at several points in
turn, each rerun going further, and compares the folder with an uninterrupted run made in this process.
`unforget eval` and `unforget finetune` are killed by tests/integration/test_eval_cli.py and test_finetune.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from crash import assert_same_run, kill_at, kill_then_finish, run_counting
from unforget.cli import main
from unforget.runs import read_jsonl

EMT = """name: kill
model: {{name: {model}, device: cpu}}
train: {{dataset: ft-colours, limit: 6, epochs: 2, batch_size: 3}}
methods:
  - {{name: lora, method: lora, options: {{r: 2}}, lr: 1.0e-2}}
eval: {{datasets: [ft-colours, ft-colours-vqa], limit: 2, batch_size: 1, max_new_tokens: 2}}
probe: {{limit: 2, batch_size: 2}}
alignment_limit: 0
"""


pytestmark = pytest.mark.usefixtures("one_thread")



def done_files(folder: Path) -> dict[Path, int]:
    """The files of every finished sub-run (a DONE beside them) with their modification times."""
    return {p: p.stat().st_mtime_ns for done in folder.rglob("DONE") for p in done.parent.iterdir() if p.is_file()}


def test_emt_study_killed_at_three_points_ends_as_an_uninterrupted_run(model_dir, tmp_path):
    config = tmp_path / "emt.yaml"
    config.write_text(EMT.format(model=model_dir))
    reference = tmp_path / "reference"
    n = run_counting(["study", "emt", "-c", config, "--out", reference])
    out = tmp_path / "killed"
    args = ["study", "emt", "-c", config, "--out", out]
    # a third of the way in (the base model evaluated, fine-tuning under way), then twice early in a rerun; odd
    # points fall before a commit (half a JSONL line, a temporary file), even ones just after it
    first, *rest = [n // 3 | 1, n // 4, n // 5 | 1]
    kill_at(args, first)
    finished = done_files(out)
    assert finished, "the first kill should land after the base evaluation finished"
    kill_then_finish(args, rest)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished runs were not redone
    for sub in ("base", "lora"):
        records = read_jsonl(out / sub / "samples.jsonl")
        keys = Counter((r["dataset"], r["id"], r["epoch"]) for r in records)
        assert max(keys.values()) == 1, "a sample was counted twice"
    assert_same_run(reference, out)


def test_tailor_killed_before_and_after_its_weights_ends_as_an_uninterrupted_run(model_dir, tmp_path):
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(model_dir), "--device", "cpu", "--datasets", "ft-colours", "--method",
                 "projector", "--lr", "1e-2", "--max-steps", "2", "--batch-size", "3", "--out", str(ft)]) == 0
    common = ["tailor", "--base", model_dir, "--finetuned", ft, "--calib", "ft-colours", "--calib-limit", "3",
              "--sparsity", "0.1", "--device", "cpu", "--out"]
    reference = tmp_path / "reference"
    n = run_counting([*common, reference])
    out = tmp_path / "killed"
    # killed while copying the base's files, then with the weights written but no metrics.json (the rerun must
    # replace weights it wrote itself, not refuse them as someone else's)
    kill_then_finish([*common, out], [5, n - 3])
    assert_same_run(reference, out)
    weights = (out / "model.safetensors").stat().st_mtime_ns
    summary = json.loads((out / "metrics.json").read_text())
    assert main([str(a) for a in [*common, out]]) == 0  # finished: not redone
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((out / "metrics.json").read_text()) == summary
