"""Training at scale on CPU (gloo, 2 processes started by torchrun as `accelerate launch --multi_gpu` starts them):

* 2-process DDP with 2 samples per process ends where a 1-process run with 4 per step ends (same samples in every
  optimizer step, answers of 1 and 2 tokens: the loss of a step is over all its answer tokens, as in one process;
  tests/integration/test_training_equivalence.py has accumulation and FSDP too);
* the EMT study under 2 processes: fine-tuning is DDP and the per-epoch forgetting evaluation is sharded over
  both processes (each evaluates half the samples), not run on rank 0 alone.
(FSDP needs GPUs: accelerate runs several CPU processes as MULTI_CPU, never FSDP; tests/gpu covers it.)"""

import json
from pathlib import Path

import pytest
import torch

from tests import child_process
from tests.finetune_helpers import register_datasets
from unforget.runs import read_jsonl

# each process runs the CLI; evaluations log how many samples this process predicted
PATCH = """
import json, os
import unforget.evaluation.evaluator as evaluator
original = evaluator._predict_and_judge
def counted(cfg, lm, ds, todo, *args, **kwargs):
    with open(os.path.join({logs!r}, "rank" + os.environ["RANK"] + ".jsonl"), "a") as fh:
        fh.write(json.dumps({{"dataset": ds.name, "n": len(todo)}}) + "\\n")
    return original(cfg, lm, ds, todo, *args, **kwargs)
evaluator._predict_and_judge = counted
if os.environ.get("LATE_RANK") == os.environ["RANK"]:  # this process reads what is done after the others began
    import time
    import unforget.scale.sharding as sharding
    read = sharding.shard_records
    def late(run):
        time.sleep(3)
        return read(run)
    sharding.shard_records = late
if os.environ.get("STOP_AFTER_EPOCH"):  # an interrupted run: every process stops after that epoch's checkpoint
    import unforget.training.trainer as trainer
    save = trainer.save_checkpoint
    def save_then_stop(*args, **kwargs):
        path = save(*args, **kwargs)
        if args[2].epochs_done == int(os.environ["STOP_AFTER_EPOCH"]):
            raise KeyboardInterrupt
        return path
    trainer.save_checkpoint = save_then_stop
"""

EMT = """name: ddp
model: {{name: {model}, device: cpu}}
train: {{dataset: ft-colours, epochs: 1, batch_size: 2}}
methods:
  - {{name: lora, method: lora, options: {{r: 4, dropout: 0.0}}, lr: 1.0e-2}}
eval: {{datasets: [ft-colours, ft-colours-vqa], batch_size: 3, max_new_tokens: 2}}
probe: {{limit: 2, batch_size: 2}}
alignment_limit: 0
"""


def torchrun(tmp_path: Path, args: list[str], logs: Path, expect: int = 0, **extra_env: str) -> None:
    script = child_process.write_script(tmp_path / "run_cli.py", PATCH.format(logs=str(logs)))
    logs.mkdir(exist_ok=True)
    done = child_process.torchrun(script, args, timeout=400, cwd=tmp_path, **extra_env)
    assert (done.returncode == 0) == (expect == 0), (done.stdout + done.stderr)[-3000:]


def adapter(folder: Path, epoch: int = 1) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "checkpoints" / f"epoch-{epoch}" / "adapter_model.safetensors"))



@pytest.mark.slow
def test_ddp_two_processes_agree_with_one(model_dir, tmp_path):
    common = ["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "lora", "--lr", "1e-2",
              "--epochs", "1", "--device", "cpu", "method_options.r=4", "method_options.dropout=0.0"]
    torchrun(tmp_path, common + ["--batch-size", "2", "--out", str(tmp_path / "ddp")], tmp_path / "logs")
    register_datasets()
    from unforget.cli import main

    torch.set_num_threads(1)
    assert main(common + ["--batch-size", "4", "--out", str(tmp_path / "single")]) == 0
    two, one = read_jsonl(tmp_path / "ddp" / "train_log.jsonl"), read_jsonl(tmp_path / "single" / "train_log.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3]  # 12 samples, 4 per optimizer step
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-6)
    a, b = adapter(tmp_path / "ddp"), adapter(tmp_path / "single")
    assert a.keys() == b.keys()
    # LoRA B starts at zero: the runs moved it, by the same amounts
    assert max(b[k].abs().max().item() for k in b if "lora_B" in k) > 1e-2
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)  # 3 Adam steps of float noise


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_on_one(model_dir, tmp_path):
    """Interrupted after epoch 1 of 2 under 2 processes x 2 samples, resumed by 1 process x 4 samples (the same 4
    samples per step): it ends where an uninterrupted 1-process run ends. A global batch that changes is refused."""
    common = ["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "lora", "--lr", "1e-2",
              "--epochs", "2", "--device", "cpu", "method_options.r=4", "method_options.dropout=0.0",
              "data.classes=[1,2]"]
    out = tmp_path / "resumed"
    torchrun(tmp_path, common + ["--batch-size", "2", "--out", str(out)], tmp_path / "logs", expect=1,
             STOP_AFTER_EPOCH="1")
    assert (out / "checkpoints" / "epoch-1").is_dir() and not (out / "checkpoints" / "epoch-2").exists()
    register_datasets()
    from unforget.cli import main

    torch.set_num_threads(1)
    assert main(common + ["--batch-size", "2", "--out", str(out)]) == 2  # 2 per step now, 4 before: refused
    assert main(common + ["--batch-size", "4", "--out", str(out)]) == 0
    assert main(common + ["--batch-size", "4", "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = read_jsonl(out / "train_log.jsonl"), read_jsonl(tmp_path / "straight" / "train_log.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in straight], rel=1e-4)
    a, b = adapter(out, 2), adapter(tmp_path / "straight", 2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
    state = json.loads((out / "checkpoints" / "epoch-2" / "trainer_state.json").read_text())
    assert state["num_processes"] == 1 and state["global_step"] == 4


@pytest.mark.slow
def test_emt_epoch_evaluation_is_sharded_over_the_processes(model_dir, tmp_path):
    config = tmp_path / "emt.yaml"
    config.write_text(EMT.format(model=model_dir))
    out = tmp_path / "emt"
    logs = tmp_path / "logs"
    # rank 1 reads the records already done 3 s late: rank 0 has written some by then, which must not count
    torchrun(tmp_path, ["study", "emt", "-c", str(config), "--out", str(out)], logs, LATE_RANK="1")
    per_rank = {r: read_jsonl(logs / f"rank{r}.jsonl") for r in (0, 1)}
    # base evaluation and the epoch-1 evaluation: both datasets, on both processes, half of the samples each
    for r in (0, 1):
        assert [(x["dataset"], x["n"]) for x in per_rank[r]] == [("ft-colours", 3), ("ft-colours-vqa", 2 - r)] * 2
    records = read_jsonl(out / "lora" / "samples.jsonl")
    assert sorted((r["epoch"], r["dataset"], r["id"]) for r in records) == sorted(
        {(1, "ft-colours", f"test-{i}") for i in range(6)} | {(1, "ft-colours-vqa", f"q-{i}") for i in range(3)})
    assert not list(out.rglob("samples.rank*.jsonl"))
    metrics = json.loads((out / "lora" / "metrics.json").read_text())
    assert set(metrics["epochs"]) == {"1"} and "probe" in metrics["epochs"]["1"]
    assert len(read_jsonl(out / "lora" / "probe.jsonl")) == 1  # written once, by the main process
    assert (out / "lora" / "DONE").exists() and (out / "report.html").exists()
