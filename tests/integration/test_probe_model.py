"""The forgetting probe on a real (tiny, random) LLaVA: KL 0 for the same model, > 0 after a weight change."""

import pytest
import torch

from unforget.errors import DataError
from unforget.evaluation.config import ProbeConfig
from unforget.evaluation.probe import ForgettingProbe, label_token_ids, next_token_logprobs
from unforget.models.loading import load_model


@pytest.fixture(scope="module")
def lm(random_llava_dir):
    return load_model(str(random_llava_dir), device="cpu", dtype="float32")


def test_kl_zero_for_the_same_model_and_positive_after_a_weight_change(lm, tmp_path):
    probe = ForgettingProbe(ProbeConfig(limit=3, batch_size=2), ["digits", "shapes"], label_set="digits")
    path = tmp_path / "probe_base.safetensors"
    probe.prepare(lm, path)
    assert path.is_file() and probe.base_logp.shape[0] == 6
    same = probe.measure(lm)
    assert same.kl.value == pytest.approx(0.0, abs=1e-6)
    assert set(same.by_dataset) == {"digits", "shapes"} and same.by_dataset["digits"].n == 3
    assert same.label_mass.value == pytest.approx(same.base_label_mass, rel=1e-5)
    assert 0.0 < same.label_mass.value < 1.0
    assert probe.label_tokens == label_token_ids(lm, [str(i) for i in range(10)])

    head = lm.model.get_output_embeddings().weight
    saved = head.detach().clone()
    try:
        with torch.no_grad():
            head.add_(torch.randn_like(head, generator=torch.Generator().manual_seed(0)) * 0.5)
        moved = probe.measure(lm)
    finally:
        with torch.no_grad():
            head.copy_(saved)
    assert moved.kl.value > 1e-3 and moved.kl.low > 0
    assert moved.label_mass.value != pytest.approx(same.label_mass.value)

    # a second probe object reads the stored base instead of recomputing it
    again = ForgettingProbe(ProbeConfig(limit=3, batch_size=3), ["digits", "shapes"], label_set="digits")
    again.prepare(lm, path)
    assert torch.equal(again.base_logp, probe.base_logp)
    assert again.measure(lm).kl.value == pytest.approx(0.0, abs=1e-6)  # batch size does not move the distributions
    other = ForgettingProbe(ProbeConfig(limit=2), ["digits", "shapes"])
    with pytest.raises(DataError, match="another probe set"):
        other.prepare(lm, path)


def test_distributions_are_log_probabilities(lm):
    probe = ForgettingProbe(ProbeConfig(limit=2), ["shapes"])
    logp = next_token_logprobs(lm, probe.samples, batch_size=2)
    assert logp.dtype == torch.float32 and logp.shape[0] == 2
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2), atol=1e-4)
