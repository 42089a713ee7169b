"""Two GPUs through the shipped accelerate configs: sharded evaluation equals one process; DDP and FSDP
fine-tuning finish and agree with one process."""

import json

import pytest

from tests.child_process import REPO_ROOT, accelerate_launch, write_script
from tests.finetune_helpers import build_tiny_llava, register_datasets


def launch(tmp_path, config: str, args: list[str]) -> None:
    script = write_script(tmp_path / "run_cli.py")
    done = accelerate_launch(REPO_ROOT / "configs" / "accelerate" / config, script, args, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_llava(folder)
    return folder


@pytest.mark.multi_gpu
def test_sharded_eval_on_two_gpus_equals_one(tiny_dir, tmp_path):
    from unforget.cli import main

    args = ["eval", "--model", str(tiny_dir), "--datasets", "ft-colours", "--batch-size", "2",
            "--max-new-tokens", "3", "--dtype", "float32"]
    register_datasets()
    assert main(args + ["--device", "cuda:0", "--out", str(tmp_path / "one")]) == 0
    launch(tmp_path, "ddp.yaml", args + ["--out", str(tmp_path / "two")])
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text())["datasets"] for r in ("one", "two"))
    for name in one:
        one[name].pop("seconds"), two[name].pop("seconds")
    assert one == two


@pytest.mark.multi_gpu
@pytest.mark.parametrize("config", ["ddp.yaml", "fsdp-llava.yaml"])
def test_finetune_on_two_gpus(tiny_dir, tmp_path, config):
    """Under FSDP every process gathers the weights and optimizer state into the checkpoint (the same code path
    tests/integration/test_fsdp_checkpoint.py runs with fully_shard on CPU)."""
    args = ["finetune", "--model", str(tiny_dir), "--datasets", "ft-colours", "--method", "lora", "--epochs", "1",
            "--batch-size", "2", "--out", str(tmp_path / "run"), "method_options.r=4", "method_options.dropout=0.0"]
    launch(tmp_path, config, args)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 3
    from safetensors.torch import load_file

    adapter = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-1" / "adapter_model.safetensors"))
    # whole LoRA matrices (r=4 rows / columns), not the shards of one process
    assert all(4 in v.shape and v.dim() == 2 for k, v in adapter.items() if "lora_" in k)
