"""Python child processes of the tests (a script, `python -m unforget`, torchrun, accelerate launch), all started in
one environment: the Hub offline, one CPU thread (two shared cores: OpenMP spinning over 2 threads makes tiny matmuls
~100x slower; the tests in this process run on one thread too, so the arithmetic is the same) and the repository
root on PYTHONPATH, so a child imports the test helpers as the tests do (``from tests.finetune_helpers import ...``).

A test's script is its patches only (:func:`write_script` adds the common start and, for a CLI run, the end)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# every script starts so: one torch thread, the in-memory ft-colours datasets registered
SCRIPT_START = """\
import torch
torch.set_num_threads(1)
from tests.finetune_helpers import register_datasets
register_datasets()
"""
# a CLI script ends so, after the test's patches: `unforget` on the script's arguments
RUN_CLI = """
import sys
from unforget.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child: offline, one thread, the repository root importable; plus ``extra``."""
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": pythonpath, **extra}


def write_script(path: Path, body: str = "", *, cli: bool = True) -> Path:
    """Write a child's script to ``path``: the common start, ``body`` (the test's patches or its whole program),
    then, with ``cli``, the run of `unforget` on the script's arguments."""
    path.write_text(SCRIPT_START + body + (RUN_CLI if cli else ""))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(args: list[str | Path], *, timeout: float, cwd: Path | None = None,
               **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` (a script and its arguments, or ``-m module ...``) in :func:`child_env`; it may fail (the
    caller checks ``returncode``), its output comes back as text."""
    return subprocess.run([sys.executable, *map(str, args)], env=child_env(**extra_env), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def torchrun(script: Path, args: list[str | Path], *, timeout: float, cwd: Path | None = None, processes: int = 2,
             **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``script ARGS`` in ``processes`` processes started by torchrun (gloo on CPU), on a free port."""
    return run_python(["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                       "--master_port", str(free_port()), script, *args], timeout=timeout, cwd=cwd, **extra_env)


def accelerate_launch(config: Path, script: Path, args: list[str | Path], *, timeout: float, cwd: Path | None = None,
                      processes: int = 2, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``script ARGS`` in ``processes`` processes started by `accelerate launch` with the accelerate ``config``."""
    return run_python(["-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(processes),
                       "--main_process_port", str(free_port()), script, *args], timeout=timeout, cwd=cwd, **extra_env)
