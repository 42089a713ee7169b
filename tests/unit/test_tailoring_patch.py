"""The patch object: file round trip, scaling, application to state dicts and loaded models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from unforget.errors import ModelLoadError
from unforget.tailoring import TailorPatch, TensorPatch

KEY = "multi_modal_projector.linear_1.weight"
DENSE = "language_model.model.layers.0.mlp.up_proj.weight"


def make_patch() -> TailorPatch:
    return TailorPatch(
        tensors={
            KEY: TensorPatch((2, 3), torch.tensor([10.0, 20.0]), torch.tensor([1, 5])),
            DENSE: TensorPatch((1, 2), torch.tensor([7.0, 8.0], dtype=torch.bfloat16)),
        },
        method="magnitude",
        base_fingerprint="abc",
        sparsity=0.1,
        options={"sparsity": 0.1},
    )


def base_state() -> dict[str, torch.Tensor]:
    return {KEY: torch.zeros(2, 3), DENSE: torch.ones(1, 2, dtype=torch.bfloat16), "other": torch.ones(3)}


def test_apply_to_state_dict_sets_only_patched_entries():
    out = make_patch().apply_to(base_state())
    assert out[KEY].tolist() == [[0.0, 10.0, 0.0], [0.0, 0.0, 20.0]]
    assert out[DENSE].dtype == torch.bfloat16 and out[DENSE].tolist() == [[7.0, 8.0]]
    assert torch.equal(out["other"], torch.ones(3))
    assert make_patch().size == 4


def test_scaling_moves_part_of_the_way():
    half = make_patch().scaled(0.5)
    assert half.scaling == 0.5 and (0.5 * make_patch()).scaling == 0.5
    out = half.apply_to(base_state())
    assert out[KEY].tolist() == [[0.0, 5.0, 0.0], [0.0, 0.0, 10.0]]
    assert out[DENSE].tolist() == [[4.0, 4.5]]


def test_file_round_trip(tmp_path):
    path = make_patch().save(tmp_path / "sub" / "patch.safetensors")
    loaded = TailorPatch.load(path)
    assert (loaded.method, loaded.base_fingerprint, loaded.sparsity, loaded.options) == (
        "magnitude", "abc", 0.1, {"sparsity": 0.1})
    assert loaded.tensors[KEY].indices.dtype == torch.int64
    assert loaded.tensors[DENSE].dense and loaded.tensors[DENSE].values.dtype == torch.bfloat16
    original, reread = make_patch().apply_to(base_state()), loaded.apply_to(base_state())
    assert all(torch.equal(original[k], reread[k]) for k in original)


def test_not_a_patch_file_is_refused(tmp_path):
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="not an unforget patch"):
        TailorPatch.load(tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="cannot read"):
        TailorPatch.load(tmp_path / "missing.safetensors")


def test_apply_to_a_loaded_model_matches_in_memory_names():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.multi_modal_projector = nn.ModuleDict({"linear_1": nn.Linear(3, 2, bias=False)})

    class Outer(nn.Module):  # in-memory naming: model.multi_modal_projector.linear_1.weight
        def __init__(self):
            super().__init__()
            self.model = Inner()

    model = Outer()
    nn.init.zeros_(model.model.multi_modal_projector["linear_1"].weight)
    patch = make_patch()
    del patch.tensors[DENSE]
    patch.apply_to(model)
    assert model.model.multi_modal_projector["linear_1"].weight.tolist() == [[0.0, 10.0, 0.0], [0.0, 0.0, 20.0]]
