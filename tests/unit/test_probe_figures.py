"""The forgetting probe's figures on hand-made distributions: KL(base || current) and the mass on label tokens."""

import math

import pytest
import torch

from unforget.errors import DataError
from unforget.evaluation.probe import kl_divergence, label_mass, load_base, probe_result, save_base


def logp(*rows):
    return torch.tensor(rows, dtype=torch.float64).log().float()


def test_kl_is_zero_for_identical_distributions_and_matches_the_formula():
    base = logp([0.5, 0.25, 0.25], [0.1, 0.2, 0.7])
    assert kl_divergence(base, base).tolist() == [0.0, 0.0]
    current = logp([0.25, 0.25, 0.5], [0.1, 0.2, 0.7])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(1.0) + 0.25 * math.log(0.25 / 0.5)
    kl = kl_divergence(base, current)
    assert kl[0].item() == pytest.approx(expected, rel=1e-6) and kl[1].item() == 0.0


def test_kl_with_zero_base_probability_and_shape_mismatch():
    base = torch.tensor([[0.0, -torch.inf]])  # all mass on token 0
    current = logp([0.5, 0.5])
    assert kl_divergence(base, current).item() == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(DataError, match="differ in shape"):
        kl_divergence(base, logp([0.2, 0.3, 0.5]))


def test_label_mass_counts_each_token_once():
    dist = logp([0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25])
    assert label_mass(dist, [1, 3]).tolist() == pytest.approx([0.6, 0.5])
    assert label_mass(dist, [1, 3, 3, 1]).tolist() == pytest.approx([0.6, 0.5])  # shared first tokens
    assert label_mass(dist, [0, 1, 2, 3]).tolist() == pytest.approx([1.0, 1.0])
    assert label_mass(dist, []).tolist() == [0.0, 0.0]


def test_probe_result_per_dataset():
    base = logp([0.5, 0.5], [0.5, 0.5], [0.9, 0.1])
    current = logp([0.5, 0.5], [0.9, 0.1], [0.9, 0.1])
    r = probe_result(base, current, ["a", "a", "b"], [0], "ft")
    kl1 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert r.n == 3 and r.kl.value == pytest.approx(kl1 / 3, rel=1e-5)
    assert r.by_dataset["a"].kl == pytest.approx(kl1 / 2, rel=1e-5) and r.by_dataset["b"].kl == pytest.approx(0.0)
    assert r.by_dataset["a"].label_mass == pytest.approx(0.7)
    assert r.by_dataset["a"].base_label_mass == pytest.approx(0.5)
    assert r.label_mass.value == pytest.approx((0.5 + 0.9 + 0.9) / 3)
    assert r.kl.low <= r.kl.value <= r.kl.high
    assert probe_result(base, current, ["a"] * 3, [], None).label_mass is None


def test_base_file_round_trip_and_damage(tmp_path):
    base = logp([0.5, 0.5], [0.9, 0.1])
    path = tmp_path / "probe_base.safetensors"
    save_base(path, base, ["d/1", "d/2"], {"model": "m"})
    loaded, keys, meta = load_base(path)
    assert torch.equal(loaded, base) and keys == ["d/1", "d/2"] and meta["model"] == "m"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="delete it"):
        load_base(path)
