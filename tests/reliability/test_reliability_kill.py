"""Guarantee 1: kill -9 at any point of an evaluation, a study or `unforget tailor`, rerun the same command, get the
results of an uninterrupted run: no sample counted twice, none lost, no finished work redone.

A forked child process SIGKILLs itself at a commit point (a rename into place or a JSONL append, before or after
it; before an append it leaves half a line). The reference is the same command run once, uninterrupted, into a
fresh folder. The evaluations use the embedded tiny-llava in rank mode on digits and shapes, which it gets mostly
but not always right (the tests check 0 < accuracy < 1), so a lost or a doubled record moves the figures.
`unforget tailor` evaluates nothing: its test tailors a random tiny LLaVA.

Files alone cannot tell a resume that re-evaluated everything from one that did not (the records come out the
same), so each child also counts the samples it put through the model (crash.install_sample_counter): a resumed
run must evaluate exactly the samples missing from its folder, n - k.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.crash import RunResult, assert_same_run, kill_at, run_child, run_counting
from unforget.cli import main
from unforget.runs import read_jsonl

# digits and shapes, 12 test samples each, ranked by likelihood over the class names: 24 records. Commands here end
# with --out; the run folder is appended.
EVAL = ["eval", "--model", "tiny-llava", "--device", "cpu", "--datasets", "digits,shapes", "--mode", "rank",
        "--limit", "12", "--batch-size", "1", "--out"]

# the base model and one LoRA arm fine-tuned on 6 digits for 2 epochs, each evaluated on 6 digits and 6 shapes:
# 12 records per epoch, 36 in all (base 12, lora 24)
EMT = """name: kill
model: {name: tiny-llava, device: cpu}
train: {dataset: digits, limit: 6, epochs: 2, batch_size: 3}
methods:
  - {name: lora, method: lora, options: {r: 2}, lr: 1.0e-2}
eval: {datasets: [digits, shapes], mode: rank, limit: 6, batch_size: 1}
probe: {limit: 2, batch_size: 2}
alignment_limit: 0
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def sample_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("samples.jsonl"))


def complete_records(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The whole records (a torn last line left out) of every samples.jsonl under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): read_jsonl(p) for p in sample_files(folder)}


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["dataset"], record["id"], record.get("epoch"), record.get("seed")


def verdicts(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, Any, Any]]:
    return {record_key(r): (r["answer"], r["prediction"], r["correct"]) for r in records}


def assert_once_each(records: dict[str, list[dict[str, Any]]]) -> None:
    for name, recs in records.items():
        twice = [key for key, count in Counter(map(record_key, recs)).items() if count > 1]
        assert not twice, f"{name}: recorded more than once: {twice}"


def accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: m["accuracy"] for name, m in metrics["datasets"].items()}


def reference_run(args: list[Any], out: Path) -> tuple[RunResult, dict[str, list[dict[str, Any]]]]:
    """The uninterrupted run into a fresh folder (in this process: the children forked after it start warm); its
    counter must have seen every record it wrote, so the counter measures what the resume tests say it does."""
    assert not out.exists()
    run = run_counting([*args, out])
    records = complete_records(out)
    n = sum(map(len, records.values()))
    assert run.evaluated == n, f"the reference evaluated {run.evaluated} samples for {n} records"
    return run, records


def resume_and_count(args: list[Any], out: Path, reference: dict[str, list[dict[str, Any]]]) -> tuple[int, int]:
    """Rerun ``args`` into ``out`` (left by a kill) to the end; it must evaluate exactly the n - k samples missing
    from its folder, keep the k records there and end with the reference's records, each once. Returns (k, n)."""
    before = complete_records(out)
    k, n = sum(map(len, before.values())), sum(map(len, reference.values()))
    resumed = run_child([*args, out])
    assert resumed.rc == 0, "the rerun after the kill failed"
    after = complete_records(out)
    assert_once_each(after)
    assert sorted(after) == sorted(reference), "not the reference's record files"
    for name, recs in after.items():
        kept = before.get(name, [])
        assert len(recs) == len(reference[name]), f"{name}: {len(recs)} records, reference {len(reference[name])}"
        assert recs[: len(kept)] == kept, f"{name}: records written before the kill changed"
        assert verdicts(recs) == verdicts(reference[name]), f"{name}: answers differ from the uninterrupted run"
    assert resumed.evaluated == n - k, f"the resume evaluated {resumed.evaluated} samples; {n - k} were missing"
    return k, n


def test_eval_killed_mid_dataset_resumes_only_the_missing_samples(tmp_path):
    """SIGKILL `unforget eval` while it writes the 19th of 24 records (the 7th of 12 shapes; half a line on disk),
    rerun it: it evaluates the 6 missing samples and ends with the uninterrupted run's records and metrics.

    Catches a resume that re-evaluates everything (evaluated 24, not 6; even one that writes no record twice), one
    that loses records (fewer lines, another n and accuracy) and one that duplicates them (an id twice)."""
    reference = tmp_path / "reference"
    _, ref_records = reference_run(EVAL, reference)
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    assert all(0 < a < 1 for a in accuracies(ref_metrics).values()), accuracies(ref_metrics)
    out = tmp_path / "killed"
    samples = out / "samples.jsonl"
    n = len(ref_records["samples.jsonl"])
    k = 12 + 6  # digits done, shapes half-way
    killed = run_child([*EVAL, out], kill_at=k + 1, only=("append-before", str(samples)))
    assert killed.rc == -signal.SIGKILL, f"the kill did not land: exit status {killed.rc}"
    assert not samples.read_bytes().endswith(b"\n"), "the kill should leave a torn last line"
    assert not (out / "metrics.json").exists()
    assert resume_and_count(EVAL, out, ref_records) == (k, n)
    metrics = json.loads((out / "metrics.json").read_text())
    for name, m in ref_metrics["datasets"].items():
        for key in ("n", "accuracy", "accuracy_low", "accuracy_high", "per_class", "confusion", "top_k"):
            assert metrics["datasets"][name][key] == m[key], f"{name}: {key} differs from the uninterrupted run"
    assert_same_run(reference, out)


def done_files(folder: Path) -> dict[Path, int]:
    """The files of every finished sub-run (a DONE beside them) with their modification times."""
    return {p: p.stat().st_mtime_ns for done in folder.rglob("DONE") for p in done.parent.iterdir() if p.is_file()}


@dataclass
class EmtReference:
    args: list[Any]  # the study's command, ending with --out
    folder: Path  # its uninterrupted run
    run: RunResult
    records: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def emt_study(one_thread, tmp_path_factory) -> EmtReference:
    """The EMT study run once, uninterrupted, for both EMT tests of this module; it must score above 0 and below 1
    in every epoch of every sub-run."""
    folder = tmp_path_factory.mktemp("emt")
    config = folder / "emt.yaml"
    config.write_text(EMT)
    args = ["study", "emt", "-c", config, "--out"]
    run, records = reference_run(args, folder / "reference")
    assert {name: len(r) for name, r in records.items()} == {"base/samples.jsonl": 12, "lora/samples.jsonl": 24}
    for name, recs in records.items():
        by_epoch: dict[Any, list[bool]] = {}
        for r in recs:
            by_epoch.setdefault(r["epoch"], []).append(bool(r["correct"]))
        for epoch, hits in by_epoch.items():
            assert 0 < sum(hits) < len(hits), f"{name} epoch {epoch}: accuracy {sum(hits)}/{len(hits)}"
    return EmtReference(args, folder / "reference", run, records)


def test_emt_study_killed_in_an_epoch_evaluation_redoes_nothing_finished(emt_study, tmp_path):
    """SIGKILL an EMT study while it writes the 9th of epoch 2's 12 records (the base model's evaluation finished,
    epoch 1's evaluated, both epochs trained), rerun it: it evaluates the 4 missing samples only, leaves the base
    sub-run's files and the epochs' checkpoints untouched and ends as the uninterrupted study.

    Catches a resume that re-evaluates everything (evaluated 36 or 24, not 4), redoes a finished epoch or sub-run
    (more than 4 evaluated; base files or checkpoints rewritten), loses records or duplicates them (record counts,
    ids, metrics)."""
    args = emt_study.args
    out = tmp_path / "killed"
    lora = out / "lora" / "samples.jsonl"
    killed = run_child([*args, out], kill_at=12 + 9, only=("append-before", str(lora)))
    assert killed.rc == -signal.SIGKILL, f"the kill did not land: exit status {killed.rc}"
    finished = done_files(out)
    assert {p.parent.name for p in finished} == {"base"}, "the kill should land after the base evaluation finished"
    epochs = Counter(r["epoch"] for r in read_jsonl(lora))
    assert epochs == {1: 12, 2: 8}, epochs
    trained = {p: p.stat().st_mtime_ns for p in (out / "lora" / "train").rglob("*.safetensors")}
    assert {p.parent.name for p in trained} == {"epoch-1", "epoch-2"}, "both epochs should be trained at the kill"
    assert resume_and_count(args, out, emt_study.records) == (12 + 20, 36)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "the finished base sub-run was redone"
    assert {p: p.stat().st_mtime_ns for p in trained} == trained, "a finished epoch was trained again"
    assert_same_run(emt_study.folder, out)


def test_emt_study_killed_at_three_points_ends_as_an_uninterrupted_run(emt_study, tmp_path):
    """Kill an EMT study at three commit points in turn (a third of the way in, then twice early in a rerun; odd
    points fall before a commit: half a JSONL line, a temporary file), then let a rerun finish: it evaluates exactly
    the samples still missing and ends as the uninterrupted study, finished sub-runs untouched.

    Catches a resume that re-evaluates (the count), loses or duplicates samples (records, metrics) after kills at
    commit points other than a sample append (a rename, a checkpoint, a probe line), and one that redoes a finished
    sub-run (its files rewritten)."""
    args, n = emt_study.args, emt_study.run.commit_points
    out = tmp_path / "killed"
    first, *rest = [n // 3 | 1, n // 4, n // 5 | 1]
    kill_at([*args, out], first)
    finished = done_files(out)
    assert finished, "the first kill should land after the base evaluation finished"
    for k in rest:
        kill_at([*args, out], k)
    resume_and_count(args, out, emt_study.records)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished runs were not redone
    assert_same_run(emt_study.folder, out)


def test_tailor_killed_before_and_after_its_weights_ends_as_an_uninterrupted_run(model_dir, tmp_path):
    """Kill `unforget tailor` while it copies the base's files, then just after its weights were renamed into place
    (no metrics.json yet): the rerun ends as an uninterrupted run, and a rerun of the finished run redoes nothing.

    Catches a rerun that refuses the weights it wrote itself as someone else's, keeps half-written files, or
    recomputes a finished tailoring."""
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(model_dir), "--device", "cpu", "--datasets", "ft-colours", "--method",
                 "projector", "--lr", "1e-2", "--max-steps", "2", "--batch-size", "3", "--out", str(ft)]) == 0
    common = ["tailor", "--base", model_dir, "--finetuned", ft, "--calib", "ft-colours", "--calib-limit", "3",
              "--sparsity", "0.1", "--device", "cpu", "--out"]
    reference = tmp_path / "reference"
    run_counting([*common, reference])
    out = tmp_path / "killed"
    kill_at([*common, out], 1, only=("replace-before", str(out / "config.json")))
    assert not (out / "model.safetensors").exists()
    kill_at([*common, out], 1, only=("replace-after", str(out / "model.safetensors")))
    assert (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    assert run_child([*common, out]).rc == 0, "the rerun after the kills failed"
    assert_same_run(reference, out)
    weights = (out / "model.safetensors").stat().st_mtime_ns
    summary = json.loads((out / "metrics.json").read_text())
    assert main([str(a) for a in [*common, out]]) == 0  # finished: not redone
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((out / "metrics.json").read_text()) == summary
