"""`unforget finetune` end to end on a tiny random LLaVA: resume is bit-identical (after a clean stop and after a
SIGKILL mid-epoch), a NaN stops the run and keeps the last good checkpoint, checkpoints load back."""

import json
from pathlib import Path

import pytest
import torch

from tests.child_process import run_python, write_script
from tests.finetune_helpers import weights_digest
from tests.strict_json import assert_strict_json
from unforget.cli import main
from unforget.errors import ConfigError, TrainingError
from unforget.models.config import ModelConfig
from unforget.models.loading import load_model
from unforget.runs import read_jsonl
from unforget.training import FinetuneConfig, TrainDataConfig, finetune, load_finetuned

# run by the subprocess tests: the CLI, with a hook that SIGKILLs the process at step $KILL_AT_STEP
PATCH = """
import os, signal
import unforget.training.trainer as trainer
original = trainer.finetune
kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
def finetune(cfg, **kwargs):
    def progress(label, done, total):
        if done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return original(cfg, **{**kwargs, "progress": progress})
trainer.finetune = finetune
"""


pytestmark = pytest.mark.usefixtures("one_thread")



def lora_config(model_dir, out, **overrides):
    values = dict(model=ModelConfig(name=str(model_dir), device="cpu"), data=TrainDataConfig(datasets=["ft-colours"]),
                  method="lora", method_options={"r": 4, "dropout": 0.1}, lr=1e-3, epochs=2, batch_size=4,
                  out=str(out))
    values.update(overrides)
    return FinetuneConfig(**values)


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight_run(model_dir, tmp_path_factory):
    """2 epochs of LoRA (dropout on, so the RNG matters) without interruption: 12 samples, batch 4 -> 6 steps."""
    out = tmp_path_factory.mktemp("straight")
    seen = []
    result = finetune(lora_config(model_dir, out), on_epoch_end=lambda epoch, lm: seen.append(epoch))
    assert seen == [1, 2] and result.global_step == 6
    return result


def test_resume_after_an_epoch_is_bit_identical(model_dir, tmp_path, straight_run):
    out = tmp_path / "stopped"
    calls = []

    def stop_after_first_epoch(epoch, lm):
        calls.append(epoch)
        if len(calls) == 1:
            raise KeyboardInterrupt  # stopped while evaluating epoch 1, after its checkpoint

    with pytest.raises(KeyboardInterrupt):
        finetune(lora_config(model_dir, out), on_epoch_end=stop_after_first_epoch)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]
    resumed = finetune(lora_config(model_dir, out), on_epoch_end=lambda e, lm: calls.append(e))
    assert calls == [1, 1, 2]  # the interrupted epoch-end callback runs again, then epoch 2's
    assert resumed.resumed_from.endswith("epoch-1")
    assert resumed.losses == straight_run.losses  # the log has each step once, with the same values
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert_same_tensors(adapter_tensors(resumed.final_checkpoint), adapter_tensors(straight_run.final_checkpoint))
    assert weights_digest(resumed.lm.model) == weights_digest(straight_run.lm.model)


def test_sigkill_mid_epoch_then_rerun_gives_the_same_weights(model_dir, tmp_path, straight_run):
    script = write_script(tmp_path / "run_cli.py", PATCH)
    out = tmp_path / "killed"
    args = ["finetune", "--model", str(model_dir), "--datasets", "ft-colours",
            "--method", "lora", "--lr", "1e-3", "--epochs", "2", "--batch-size", "4", "--device", "cpu",
            "--save-every-steps", "2", "--out", str(out), "method_options.r=4", "method_options.dropout=0.1"]
    killed = run_python([script, *args], timeout=300, KILL_AT_STEP="3")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-2"]
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3]  # step 3 ran, unsaved
    assert main(args) == 0  # the same command again (in this process: one interpreter start less)
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in read_jsonl(out / "train_log.jsonl")] == straight_run.losses
    assert_same_tensors(adapter_tensors(out / "checkpoints" / "epoch-2"),
                        adapter_tensors(straight_run.final_checkpoint))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"].endswith("step-2") and (out / "DONE").exists()


def test_nan_loss_stops_with_step_and_epoch_and_keeps_the_last_good_checkpoint(model_dir, tmp_path):
    lm = load_model(str(model_dir), device="cpu")
    calls = {"n": 0}

    def nan_from_the_fifth_forward(module, args, output):
        calls["n"] += 1
        if calls["n"] >= 5:  # step 5 = the second step of epoch 2
            output.loss = output.loss * float("nan")
        return output

    lm.model.register_forward_hook(nan_from_the_fifth_forward)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"step 5 \(epoch 2\)") as err:
        finetune(lora_config(model_dir, out, method="projector", method_options={}), lm=lm)
    assert "epoch-1" in str(err.value) and "nan" in str(err.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]
    good = load_finetuned(out / "checkpoints" / "epoch-1", device="cpu")
    assert all(torch.isfinite(p).all() for p in good.model.parameters())
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4]


def test_exploding_learning_rate_is_reported_by_the_cli(model_dir, tmp_path, capsys):
    rc = main(["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "full", "--lr", "1e30",
               "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "boom"),
               "warmup_ratio=0"])
    assert rc == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "step 2 (epoch 1)" in text and "Lower the learning rate" in text  # step 1 made the weights ~1e30


@pytest.mark.parametrize("method", ["lora", "projector", "full"])
def test_checkpoints_load_back(model_dir, tmp_path, method):
    options = {"r": 4, "freeze_multi_modal_projector": False} if method == "lora" else {}
    result = finetune(lora_config(model_dir, tmp_path / method, method=method, method_options=options,
                                  lr=1e-2, epochs=1, max_steps=2))
    ckpt = Path(result.final_checkpoint)
    assert ckpt.name == "step-2"
    trained = {n: p.detach().clone() for n, p in result.lm.model.named_parameters()}
    if method == "lora":
        from peft import PeftModel

        assert (ckpt / "adapter_config.json").is_file()
        peft_model = PeftModel.from_pretrained(load_model(str(model_dir), device="cpu").model, str(ckpt))
        loaded = dict(peft_model.named_parameters())
        assert trained.keys() == loaded.keys()
        assert all(torch.equal(trained[n], loaded[n]) for n in trained)
        merged_reference = load_finetuned(ckpt, device="cpu")
        assert type(merged_reference.model).__name__ == "PeftModel"
        return
    if method == "projector":
        from safetensors.torch import load_file

        saved = load_file(str(ckpt / "projector.safetensors"))
        assert set(saved) == {n for n in trained if "multi_modal_projector" in n}
    else:
        assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
        assert load_model(str(ckpt), device="cpu").processor is not None
    loaded = load_finetuned(ckpt, device="cpu").model
    assert all(torch.equal(trained[n], p) for n, p in loaded.named_parameters())


def test_cli_end_to_end_and_rerun_of_a_finished_run(model_dir, tmp_path):
    out = tmp_path / "cli"
    args = ["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "projector",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--classes", "0,1", "--template", "round-robin",
            "--out", str(out), "warmup_ratio=0.0"]
    assert main(args) == 0
    config = (out / "config.yaml").read_text()
    assert "method: projector" in config and "lr: 0.001" in config and "round-robin" in config
    log = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2]  # classes 0 and 1: 8 of the 12 samples, batch 4
    assert all({"loss", "lr", "grad_norm", "epoch"} <= set(r) for r in log)
    assert (out / "checkpoints" / "epoch-1" / "projector.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "epoch-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["method"] == "projector" and state["epoch_end_done"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["trainable_parameters"] > 0
    assert main(args) == 0  # finished: nothing to do, nothing appended
    assert read_jsonl(out / "train_log.jsonl") == log
    assert_strict_json(out, at_least=5)  # config's metrics, the log, each checkpoint's state and optimizer
    assert main(["report", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert page.startswith("# Fine-tuning: projector on ft-colours") and "| epoch-1 | epoch | 2 | 1 |" in page
    assert (out / "plots" / "loss.png").is_file()
    with pytest.raises(ConfigError, match="another config"):
        finetune(lora_config(model_dir, out, method="projector", method_options={}, epochs=1,
                             data=TrainDataConfig(datasets=["ft-colours"], classes=[0, 1]), lr=5e-3))
