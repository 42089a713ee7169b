"""Studies are whole experiments (emt, 2x2, continual, tailor, survey), registered by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry


@dataclass(frozen=True)
class Study:
    """``config_class``: the study's config dataclass; ``run(config, progress) -> run folder``."""

    name: str
    config_class: type
    run: Callable[..., Path]
    description: str = ""


STUDIES: Registry[Study] = Registry("study", modules=("unforget.studies.emt", "unforget.studies.twobytwo",
                                                   "unforget.studies.continual", "unforget.studies.tailor",
                                                   "unforget.studies.survey"))
