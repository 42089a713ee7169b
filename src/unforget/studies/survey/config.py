"""The survey's config as dataclasses, and the folder name of each surveyed model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...data.sampling import SamplingStrategy
from ...errors import ConfigError


@dataclass
class SurveyEval:
    """How every model is evaluated (the same for all, so the table compares like with like)."""

    mode: Literal["generate", "rank"] = "rank"
    judges: list[str] = field(default_factory=lambda: ["exact"])
    split: str = "test"
    limit: int | None = 200  # samples per dataset, drawn as `sampling` says (the same for every model)
    sampling: SamplingStrategy = "stratified"
    seed: int = 0
    batch_size: int = 16
    baselines: list[str] = field(default_factory=lambda: ["zero-shot", "linear-probe"])
    probe_train_limit: int = 1000
    encoder: str | None = None  # CLIP folder for zero-shot of every model; default: each model's own encoder/
    dtype: str = "auto"
    device: str = "auto"


@dataclass
class SurveyConfig:
    name: str = "survey"
    models: list[str] = field(default_factory=lambda: ["tiny-llava"])
    datasets: list[str] = field(default_factory=lambda: ["digits", "shapes", "letters", "colour-shapes"])
    eval: SurveyEval = field(default_factory=SurveyEval)
    out: str | None = None

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("survey: name at least one model (--models tiny-llava,smol-llava,PATH)")
        if not self.datasets:
            raise ConfigError("survey: name at least one dataset (--datasets digits,shapes)")
        slugs = [model_slug(m) for m in self.models]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"survey: two models share a folder name ({slugs}); give distinct paths")


def model_slug(model: str) -> str:
    """A folder name for a model entry: the last path parts, ``@adapter`` appended."""
    base, _, adapter = model.partition("@")
    name = "-".join(Path(base.rstrip("/")).parts[-2:]) if "/" in base else base
    if adapter:
        name += "-" + "-".join(Path(adapter.rstrip("/")).parts[-2:])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"
