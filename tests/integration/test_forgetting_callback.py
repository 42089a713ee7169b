"""ForgettingCallback inside a plain transformers Trainer: evaluations at the start and every N steps, accuracy and
forgetting (drop from the first evaluation) in the Trainer's log history and a JSONL file; training unchanged."""

import functools

import pytest

from tests.finetune_helpers import build_tiny_llava, weights_digest
from unforget.evaluation.config import EvalConfig
from unforget.models.loading import LoadedModel, load_model
from unforget.runs import read_jsonl
from unforget.training.callback import ForgettingCallback
from unforget.training.config import TrainDataConfig
from unforget.training.data import InstructionDataset, processor_only, training_items
from unforget.training.examples import collate_examples


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


def train_with_trainer(model_dir, out, callbacks):
    from transformers import Trainer, TrainingArguments

    lm = load_model(str(model_dir), device="cpu")
    items, _ = training_items(TrainDataConfig(datasets=["ft-colours"]))
    dataset = InstructionDataset(LoadedModel(processor_only(), lm.processor, lm.family, lm.source), items)
    args = TrainingArguments(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
                             remove_unused_columns=False, seed=0, disable_tqdm=True)
    trainer = Trainer(model=lm.model, args=args, train_dataset=dataset, callbacks=callbacks,
                      data_collator=functools.partial(collate_examples, pad_token_id=lm.tokenizer.pad_token_id))
    trainer.train()
    return lm, trainer


def test_forgetting_callback_logs_accuracy_and_drop(tmp_path):
    model_dir = tmp_path / "model"
    build_tiny_llava(model_dir)
    processor = load_model(str(model_dir), device="cpu").processor
    log_file = tmp_path / "forgetting.jsonl"
    callback = ForgettingCallback(processor, ["ft-colours"], every_steps=2, every_epochs=None, limit=3,
                                  eval_config=EvalConfig(max_new_tokens=3, batch_size=3), log_file=log_file)
    lm, trainer = train_with_trainer(model_dir, tmp_path / "with", [callback])

    records = read_jsonl(log_file)
    assert [(r["step"], r["event"]) for r in records] == [(0, "start"), (2, "step"), (4, "step")]
    first = records[0]["forgetting/ft-colours/accuracy"]
    for r in records:
        accuracy = r["forgetting/ft-colours/accuracy"]
        assert 0.0 <= accuracy <= 1.0 and accuracy in (0.0, 1 / 3, 2 / 3, 1.0)  # 3 samples
        assert r["forgetting/ft-colours/drop"] == pytest.approx(first - accuracy)
    assert records[0]["forgetting/ft-colours/drop"] == 0.0
    in_history = [h for h in trainer.state.log_history if "forgetting/ft-colours/accuracy" in h]
    assert in_history == records == callback.history

    # evaluating in between does not change what training does: same weights as without the callback
    plain, _ = train_with_trainer(model_dir, tmp_path / "without", [])
    assert weights_digest(lm.model) == weights_digest(plain.model)


def test_forgetting_callback_measures_the_probe(tmp_path):
    from unforget.evaluation.config import ProbeConfig

    model_dir = tmp_path / "model"
    build_tiny_llava(model_dir)
    processor = load_model(str(model_dir), device="cpu").processor
    log_file = tmp_path / "forgetting.jsonl"
    callback = ForgettingCallback(processor, ["ft-colours"], every_steps=4, every_epochs=None, limit=2,
                                  eval_config=EvalConfig(max_new_tokens=2, batch_size=2), log_file=log_file,
                                  probe=ProbeConfig(limit=3, label_set="ft-colours"))
    train_with_trainer(model_dir, tmp_path / "with", [callback])
    records = read_jsonl(log_file)
    assert [r["step"] for r in records] == [0, 4]
    assert records[0]["probe/kl"] == pytest.approx(0.0, abs=1e-6)  # the first evaluation is the base
    assert records[1]["probe/kl"] > 0 and records[1]["probe/ft-colours/kl"] == pytest.approx(records[1]["probe/kl"])
    assert 0.0 <= records[1]["probe/label_mass"] <= 1.0
    assert (tmp_path / "forgetting.probe_base.safetensors").is_file()
