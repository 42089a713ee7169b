"""What a verb is: its name and help, the arguments it declares, and the function that runs it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Verb:
    """``unforget <name>``: ``add_arguments`` declares its arguments, ``run`` does the work and returns the exit
    code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
