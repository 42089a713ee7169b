"""Test setup shared by every test folder.

Tests never download: the Hub is put in offline mode before anything imports huggingface_hub (it reads the variable
once, at import). tests/ is a package: tests import their helpers as ``from tests.tiny_models import make_tiny_model``
(pytest puts the repository root on sys.path; tests/child_process.py gives child processes the same).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

pytest_plugins = ["tests.finetune_fixtures"]
