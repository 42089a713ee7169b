"""Every run gets a report, and a fine-tuning run is something `unforget eval` takes: a tiny LoRA run through the
real CLI (``train.epochs=1``, the override a study takes) writes its report; ``eval --model RUN_DIR`` evaluates the
base with that run's newest checkpoint and writes its report too; an adapter given as the model is refused with
the flag to use instead."""

from __future__ import annotations

import json

import pytest

from unforget.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lora_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "lora"
    rc = main(["finetune", "--model", str(model_dir), "--datasets", "ft-colours", "--method", "lora", "--lr", "1e-3",
               "--batch-size", "4", "--device", "cpu", "--out", str(out), "train.epochs=1", "method_options.r=4"])
    assert rc == 0
    return out


def test_finetune_takes_the_studies_override_and_writes_its_report(lora_run):
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and metrics["config"]["epochs"] == 1  # the default is more than one
    page = (lora_run / "report.md").read_text()
    assert page.startswith("# Fine-tuning: lora") and "trainable parameters" in page
    assert (lora_run / "plots" / "loss.png").is_file() and (lora_run / "report.html").is_file()


def test_eval_takes_a_finetuning_run_folder_and_writes_its_report(lora_run, model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(lora_run), "--datasets", "ft-colours", "--limit", "4", "--max-new-tokens", "2",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().out
    config = (out / "config.yaml").read_text()
    checkpoint = lora_run / "checkpoints" / "epoch-1"
    assert f"name: {model_dir}" in config and f"adapter: {checkpoint}" in config
    assert (out / "report.html").is_file() and (out / "report.md").read_text().startswith("# Evaluation")


def test_an_adapter_given_as_the_model_points_to_adapter(lora_run, capsys):
    adapter = lora_run / "checkpoints" / "epoch-1"
    (adapter / "trainer_state.json").rename(adapter / "state.json")  # a bare peft adapter folder
    try:
        rc = main(["eval", "--model", str(adapter), "--datasets", "ft-colours", "--limit", "2"])
    finally:
        (adapter / "state.json").rename(adapter / "trainer_state.json")
    assert rc == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "is a peft adapter" in text and f"--adapter {adapter}" in text
