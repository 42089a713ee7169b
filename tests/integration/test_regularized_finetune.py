"""Fine-tuning with a loss regularizer on a tiny random LLaVA: an interrupted EWC / LwF run resumes to the same
weights as an uninterrupted one (the Fisher is read back from regularizer.safetensors, the LwF teacher and the
anchors are taken again from the starting weights), and L2 holds the weights near where they started."""

import pytest

from tests.finetune_helpers import weights_digest
from unforget.models.config import ModelConfig
from unforget.training import FinetuneConfig, TrainDataConfig, finetune
from unforget.training.config import RegularizerConfig
from unforget.training.regularizers import STATE_FILE


pytestmark = pytest.mark.usefixtures("one_thread")



REGULARIZERS = {
    "ewc": RegularizerConfig("ewc", {"strength": 1e4, "data": ["ft-colours"], "limit": 4}),
    "lwf": RegularizerConfig("lwf", {"strength": 1.0, "temperature": 2.0}),
}


def config(model_dir, out, regularizer, **overrides):
    values = dict(model=ModelConfig(name=str(model_dir), device="cpu"), data=TrainDataConfig(datasets=["ft-colours"]),
                  method="lora", method_options={"r": 4, "dropout": 0.1}, lr=1e-2, epochs=2, batch_size=4,
                  regularizer=regularizer, out=str(out))
    values.update(overrides)
    return FinetuneConfig(**values)


@pytest.mark.parametrize("name", ["ewc", "lwf"])
def test_interrupted_regularized_run_resumes_bit_identically(model_dir, tmp_path, name):
    straight = finetune(config(model_dir, tmp_path / "straight", REGULARIZERS[name]))
    out = tmp_path / "stopped"
    calls = []

    def stop_after_first_epoch(epoch, lm):
        calls.append(epoch)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(config(model_dir, out, REGULARIZERS[name]), on_epoch_end=stop_after_first_epoch)
    assert (out / STATE_FILE).is_file() == (name == "ewc")  # only EWC has state to save
    resumed = finetune(config(model_dir, out, REGULARIZERS[name]))
    assert resumed.resumed_from.endswith("epoch-1")
    assert resumed.losses == straight.losses
    assert weights_digest(resumed.lm.model) == weights_digest(straight.lm.model)
    plain = finetune(config(model_dir, tmp_path / "plain", RegularizerConfig()))
    # the first step starts at the anchor (LoRA's B = 0: the teacher's outputs), so the penalty is 0 there
    assert plain.losses[0] == straight.losses[0] and plain.losses != straight.losses


def test_a_strong_l2_pull_keeps_the_weights_near_the_start(model_dir, tmp_path):
    from unforget.models.loading import load_model

    start = {n: p.detach().clone() for n, p in load_model(str(model_dir), device="cpu").model.named_parameters()}

    def moved(result):
        params = dict(result.lm.model.named_parameters())
        return sum(float((params[n] - start[n]).square().sum()) for n in start if n in params and "projector" in n)

    common = dict(method="projector", method_options={}, lr=1e-3, epochs=4, lr_scheduler="constant")
    free = finetune(config(model_dir, tmp_path / "free", RegularizerConfig(), **common))
    pulled = finetune(config(model_dir, tmp_path / "pulled", RegularizerConfig("l2", {"strength": 1e4}), **common))
    assert moved(pulled) < 0.01 * moved(free)
