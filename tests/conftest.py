"""Test setup shared by every test folder.

Tests never download: the Hub is put in offline mode before anything imports huggingface_hub (it reads the variable
once, at import). tests/ goes on sys.path so tests import their helpers (``from tiny_models import make_tiny_model``).
"""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

pytest_plugins = ["finetune_fixtures"]
