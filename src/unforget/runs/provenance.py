"""Where a result came from: library versions, the machine and the git sha, written into every metrics document
(as peft's method_comparison results carry their ``run_info``), so that results of different days can be compared."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__


def run_info() -> dict[str, Any]:
    """Versions, machine and git sha, as in peft's method_comparison results."""
    # torch and transformers only for their versions and the device: imported here, so that reading run folders
    # (runs/ is the bottom layer, used by every report) does not pay for importing them
    import torch
    import transformers

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "unforget": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "git_sha": sha,
    }
