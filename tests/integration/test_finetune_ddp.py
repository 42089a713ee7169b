"""DDP on CPU: 2 processes (gloo, started by torchrun as `accelerate launch --multi_gpu` starts them on GPUs) run
the unchanged `unforget finetune` and end with identical weights, each having seen its own part of every batch.

(`accelerate launch --cpu` starts a single process unless MPI is set up, hence torchrun here.)"""

import json

import pytest

from tests.child_process import torchrun, write_script
from tests.finetune_helpers import build_tiny_llava
from unforget.runs import read_jsonl

# each process runs the CLI, then writes the digest of the weights it ends with
PATCH = """
import os
from tests.finetune_helpers import weights_digest
import unforget.training.trainer as trainer
original = trainer.finetune
def finetune(cfg, **kwargs):
    result = original(cfg, **kwargs)
    rank = int(os.environ["RANK"])
    with open(os.path.join({digests!r}, f"rank{{rank}}.txt"), "w") as fh:
        fh.write(weights_digest(result.lm.model) + " " + str(result.global_step))
    return result
trainer.finetune = finetune
"""


@pytest.mark.slow
def test_two_process_ddp_ranks_end_identical(tmp_path):
    model_dir = tmp_path / "model"
    build_tiny_llava(model_dir)
    digests = tmp_path / "digests"
    digests.mkdir()
    script = write_script(tmp_path / "run_cli.py", PATCH.format(digests=str(digests)))
    out = tmp_path / "ddp"
    done = torchrun(script, ["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "lora",
                             "--lr", "1e-2", "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--out", str(out),
                             "method_options.r=4"], timeout=400, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rank0, rank1 = ((digests / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0 == rank1  # same weights and step count on both processes
    # 12 samples, 2 per process per step: 3 optimizer steps, each on 4 samples
    assert rank0[1] == "3"
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3]  # written once, by rank 0
    state = json.loads((out / "checkpoints" / "epoch-1" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 3
    assert {p.name for p in (out / "checkpoints" / "epoch-1").glob("rng_state_*.json")} == {
        "rng_state_0.json", "rng_state_1.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
