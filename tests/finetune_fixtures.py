"""Fixtures of the fine-tuning tests (a pytest plugin, loaded by tests/conftest.py): one torch thread and the
in-memory colour datasets for a whole module, and a tiny random LLaVA saved once per module.

A module that wants them for every test says ``pytestmark = pytest.mark.usefixtures("one_thread")``; a module that
defines a fixture of the same name uses its own."""

import pytest
import torch

from tests.finetune_helpers import build_tiny_llava, register_datasets


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread (two shared cores: OpenMP spinning over 2 threads makes tiny matmuls ~100x slower; child
    processes run on one thread too, so the arithmetic is the same) and the ft-colours datasets registered."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    register_datasets()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random LLaVA folder (model + processor), built once per module."""
    folder = tmp_path_factory.mktemp("tiny-llava") / "model"
    build_tiny_llava(folder)
    return folder
