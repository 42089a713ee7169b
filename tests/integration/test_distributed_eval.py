"""`unforget eval` sharded over 2 CPU processes (gloo, started by torchrun as `accelerate launch` starts them on
GPUs): each process appends its own shard file, the main one merges them, and the metrics and records equal a
single-process run's exactly. A rerun on the merged folder resumes with nothing to do."""

import json

import pytest

from tests.child_process import torchrun, write_script
from tests.finetune_helpers import build_tiny_llava, register_datasets
from unforget.runs import read_jsonl


def comparable(metrics: dict) -> dict:
    """metrics.json without what differs between any two runs (wall time)."""
    return {name: {k: v for k, v in d.items() if k != "seconds"} for name, d in metrics["datasets"].items()}


@pytest.mark.slow
def test_two_process_eval_equals_one_process(tmp_path):
    model_dir = tmp_path / "model"
    build_tiny_llava(model_dir)
    args = ["eval", "--model", str(model_dir), "--datasets", "ft-colours,ft-colours-vqa", "--device", "cpu",
            "--batch-size", "2", "--max-new-tokens", "3", "--also-rank"]

    register_datasets()
    from unforget.cli import main

    single = tmp_path / "single"
    assert main(args + ["--out", str(single)]) == 0

    script = write_script(tmp_path / "run_cli.py")
    sharded = tmp_path / "sharded"
    done = torchrun(script, [*args, "--out", str(sharded)], timeout=300, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    assert not list(sharded.glob("samples.rank*.jsonl"))  # merged into samples.jsonl and removed
    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((sharded / "metrics.json").read_text())
    assert comparable(two) == comparable(one)
    key = lambda r: (r["dataset"], r["id"])  # noqa: E731
    assert sorted(read_jsonl(sharded / "samples.jsonl"), key=key) == sorted(read_jsonl(single / "samples.jsonl"),
                                                                            key=key)
    assert len(read_jsonl(sharded / "samples.jsonl")) == 6 + 3  # ft-colours test + ft-colours-vqa test, once each


def test_shards_partition_and_merge(tmp_path):
    from unforget.runs import RunDir
    from unforget.scale.sharding import Shard, merge_shards, shard_records, sum_stats

    items = list(range(7))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items
    run = RunDir(tmp_path / "run")
    with run.appender() as app:
        app.write({"id": "a", "dataset": "d"})
    for r, ids in ((0, ["b", "a"]), (1, ["c"])):
        with run.appender(Shard(r, 2).samples_name) as app:
            for i in ids:
                app.write({"id": i, "dataset": "d"})
    assert [r["id"] for r in shard_records(run)] == ["b", "a", "c"]  # a resumed run sees them
    assert merge_shards(run) == 2  # "a" was already there: merged once
    assert [r["id"] for r in run.samples()] == ["a", "b", "c"]
    assert not list(run.path.glob("samples.rank*"))
    assert sum_stats([{"llm": {"calls": 2, "model": "m"}}, {"llm": {"calls": 3, "model": "m"}}]) == {
        "llm": {"calls": 5, "model": "m"}}


def test_oom_backs_off_to_a_batch_that_fits():
    from unforget.scale.batching import with_oom_backoff

    tried = []

    def run(batch_size):
        tried.append(batch_size)
        if batch_size > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch_size

    assert with_oom_backoff(run, 32) == 4  # the largest size accelerate's schedule (x 0.9 per retry) tries that fits
    assert tried[0] == 32 and tried == sorted(tried, reverse=True) and all(b > 4 for b in tried[:-1])
    with pytest.raises(ValueError):  # another error is not retried
        with_oom_backoff(lambda b: (_ for _ in ()).throw(ValueError("bad")), 8)
