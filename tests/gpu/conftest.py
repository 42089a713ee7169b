"""CUDA-only tests: skipped (collected, not run) where torch sees no GPU; the multi-GPU ones need 2."""

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.gpu)
        need = 2 if item.get_closest_marker("multi_gpu") else 1
        if gpus < need:
            item.add_marker(pytest.mark.skip(reason=f"needs {need} CUDA GPU(s), found {gpus}"))


def pytest_configure(config):
    config.addinivalue_line("markers", "multi_gpu: needs 2 CUDA GPUs")
