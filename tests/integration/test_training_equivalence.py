"""Distributed training is the same training: the samples of one optimizer step give the same loss and the same
weights however they are split, over processes (DDP, gloo on CPU), over accumulation steps, or sharded by FSDP
(torch's ``fully_shard`` on CPU processes), as one process taking them in one batch.

The answers have different lengths ("red" is one token, "green" and "blue" two, and the two prompt templates
differ too), so a mean of per-batch mean losses would weigh a token of a short-answer batch more than one of a
long-answer batch; the loss of a step is the sum over its answer tokens divided by their number in the whole step
(transformers' ``num_items_in_batch``)."""

import json
from pathlib import Path

import pytest
import torch

from tests.child_process import torchrun, write_script
from unforget.runs import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

# lora adapters of 4, no dropout; 8 samples of the three colours (answers of 1 and 2 tokens), 4 per optimizer step
COMMON = ["finetune", "--datasets", "ft-colours", "--method", "lora", "--lr", "1e-2", "--epochs", "1",
          "--device", "cpu", "method_options.r=4", "method_options.dropout=0.0", "data.limit=8",
          "data.sampling=head", "--seed", "3", "warmup_ratio=0"]

# unforget's FSDP path on CPU: accelerate enables FSDP on GPUs only, so the accelerator the trainer makes is told
# it runs FSDP2 (as `accelerate launch --config_file configs/accelerate/fsdp-*.yaml` tells it on GPUs); prepare()
# then shards the model with fully_shard, exactly as there
FSDP_PATCH = """
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
import unforget.training.trainer as trainer
make = trainer.make_accelerator
def make_fsdp(cfg, find_unused_parameters):
    accelerator = make(cfg, find_unused_parameters)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                            auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
                                            state_dict_type="FULL_STATE_DICT")
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    prepare = accelerator.prepare
    def prepare_sharded(*args):
        prepared = prepare(*args)
        from unforget.training.checkpoints import is_sharded
        assert is_sharded(prepared[0]), "accelerate did not shard the model"
        return prepared
    accelerator.prepare = prepare_sharded
    return accelerator
trainer.make_accelerator = make_fsdp
"""


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = max((out / "checkpoints").iterdir(), key=lambda p: p.stat().st_mtime)
    return load_file(str(folder / "adapter_model.safetensors"))


def run_here(args: list[str]) -> None:
    from unforget.cli import main

    assert main(args) == 0


def run_two_processes(tmp_path: Path, args: list[str], patch: str = "") -> None:
    script = write_script(tmp_path / "run_cli.py", patch)
    done = torchrun(script, args, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def token_weighted_first_loss(model_dir: Path) -> float:
    """The independent reference of step 1's loss: the starting model's cross-entropy summed over the answer tokens
    of the first 4 samples, divided by their number (one forward per sample, no batching, no padding)."""
    from unforget.models.loading import load_model
    from unforget.training.data import EpochShuffleSampler, InstructionDataset, training_items
    from unforget.training.config import TrainDataConfig

    data = TrainDataConfig(datasets=["ft-colours"], limit=8, sampling="head")
    items, _ = training_items(data)
    lm = load_model(str(model_dir), dtype="float32", device="cpu")
    order = list(EpochShuffleSampler(len(items), seed=3))[:4]
    dataset = InstructionDataset(lm, items)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in order:
            e = dataset[i]
            logits = lm.model(input_ids=e.input_ids[None], pixel_values=e.pixel_values).logits[0, :-1]
            targets = e.labels[1:]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def answer_lengths(model_dir: Path) -> set[int]:
    from unforget.models.loading import load_model
    from unforget.training.config import TrainDataConfig
    from unforget.training.data import InstructionDataset, training_items

    items, _ = training_items(TrainDataConfig(datasets=["ft-colours"], limit=8, sampling="head"))
    dataset = InstructionDataset(load_model(str(model_dir), dtype="float32", device="cpu"), items)
    return {int((dataset[i].labels != -100).sum()) for i in range(len(items))}


@pytest.fixture(scope="module")
def one_batch(model_dir, tmp_path_factory) -> Path:
    """The reference: one process, the 4 samples of a step in one batch (whose loss is the token-weighted mean
    however it is computed). The answers differ in length, or nothing below would be tested."""
    assert len(answer_lengths(model_dir)) > 1
    out = tmp_path_factory.mktemp("one-batch") / "run"
    run_here(COMMON + ["--model", str(model_dir), "--batch-size", "4", "--out", str(out)])
    return out


def assert_same_training(run: Path, reference: Path, model_dir: Path) -> None:
    got, want = read_jsonl(run / "train_log.jsonl"), read_jsonl(reference / "train_log.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2]  # 8 samples, 4 per optimizer step
    # the logged loss is the token-weighted mean, as computed sample by sample, and the reference's
    assert got[0]["loss"] == pytest.approx(token_weighted_first_loss(model_dir), rel=1e-6)
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-6)
    a, b = adapter(run), adapter(reference)
    assert a.keys() == b.keys()
    # LoRA B starts at zero: the runs moved it
    assert max(b[k].abs().max().item() for k in b if "lora_B" in k) > 1e-3
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_equals_one_batch(model_dir, one_batch, tmp_path):
    out = tmp_path / "accum"
    run_here(COMMON + ["--model", str(model_dir), "--batch-size", "1", "--out", str(out), "grad_accum=4"])
    assert_same_training(out, one_batch, model_dir)


@pytest.mark.slow
def test_two_process_ddp_equals_one_batch(model_dir, one_batch, tmp_path):
    out = tmp_path / "ddp"
    run_two_processes(tmp_path, COMMON + ["--model", str(model_dir), "--batch-size", "2", "--out", str(out)])
    assert_same_training(out, one_batch, model_dir)
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2


@pytest.mark.slow
def test_two_process_ddp_with_accumulation_equals_one_batch(model_dir, one_batch, tmp_path):
    """Both at once: each process takes its 2 samples as 2 micro-batches of 1."""
    out = tmp_path / "ddp-accum"
    run_two_processes(tmp_path, COMMON + ["--model", str(model_dir), "--batch-size", "1", "--out", str(out),
                                          "grad_accum=2"])
    assert_same_training(out, one_batch, model_dir)


@pytest.mark.slow
def test_two_process_fsdp_equals_one_batch(model_dir, one_batch, tmp_path):
    out = tmp_path / "fsdp"
    # with the vision feature cache on, as users run it: it must leave a sharded tower alone (caching a tower that
    # FSDP gathers per forward failed in its reshard: "Trying to resize storage that is not resizable")
    run_two_processes(tmp_path, COMMON + ["--model", str(model_dir), "--batch-size", "2", "--out", str(out)],
                      FSDP_PATCH)
    assert_same_training(out, one_batch, model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("regularizer", [["regularizer.name=l2", "regularizer.options.strength=10"],
                                         ["regularizer.name=lwf", "regularizer.options.strength=5"]])
def test_a_regularizer_counts_once_per_step_under_accumulation(model_dir, one_batch, tmp_path, regularizer):
    """A penalty is added once per optimizer step, however many micro-batches make it: l2 (a function of the
    weights alone) neither multiplied nor divided by the accumulation steps, lwf (a mean over answer tokens) the
    mean over the step's answer tokens. Both are 0 at step 1 (the weights and the teacher are the start), not at 2."""
    args = COMMON + ["--model", str(model_dir)] + regularizer
    run_here(args + ["--batch-size", "4", "--out", str(tmp_path / "one")])
    run_here(args + ["--batch-size", "1", "--out", str(tmp_path / "accum"), "grad_accum=4"])
    assert_same_training(tmp_path / "accum", tmp_path / "one", model_dir)
    with_penalty, without = (read_jsonl(r / "train_log.jsonl")[1]["loss"] for r in (tmp_path / "one", one_batch))
    assert abs(with_penalty - without) > 1e-4  # the penalty took part
