"""The continual study's folder names: the base model's evaluation, each step's folder, each step's saved weights
(the layout itself is drawn in :mod:`unforget.studies.continual.run`)."""

from __future__ import annotations

import re

BASE_DIR = "base"
WEIGHTS_FILE = "weights.safetensors"


def step_folder_name(index: int, ref: str) -> str:
    """``step-<i>-<task>``: the folder of task ``index`` (the dataset reference made into a file name)."""
    return f"step-{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', ref).strip('-.') or 'task'}"
