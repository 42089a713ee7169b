"""What every tailoring method shares: the registry, the job it receives, the statistics it reports.

A method is one module of this package that defines its options dataclass and a ``run(job, config)`` function and
registers a :class:`TailoringMethod` (as peft registers tuner types); the registry finds the module itself, so a new
method is one new file. ``run`` returns one
:class:`~unforget.tailoring.patch.TensorPatch` per considered tensor it changes; everything else keeps
the base's values.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Sequence

from ..errors import ConfigError
from ..models.families import FAMILIES, tailor_default_modules
from ..registry import Registry, did_you_mean
from .calibration import CalibrationStats
from .checkpoints import Checkpoint
from .keys import canonical_name
from .patch import TensorPatch

# The language model's transformer blocks and the multimodal projector (matched in either naming scheme:
# saved ``language_model.model.layers.0...`` and in-memory ``model.language_model.layers.0...``): LLaVA's names, the
# default of a checkpoint whose family is unknown; a family's own come from models/families.py.
DEFAULT_MODULES: tuple[str, ...] = (r"language_model\.layers\.", r"multi_modal_projector\.")


def default_modules(checkpoint: Checkpoint) -> tuple[str, ...]:
    """The considered tensors' name patterns when none are given: the language model's blocks and the projector of
    the checkpoint's family (its folder's config.json ``model_type``), LLaVA's where the family is unknown."""
    config = checkpoint.folder / "config.json" if checkpoint.folder is not None else None
    if config is None or not config.is_file():
        return DEFAULT_MODULES
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return DEFAULT_MODULES
    return tailor_default_modules(model_type) if model_type in FAMILIES else DEFAULT_MODULES


@dataclass
class StageSeconds:
    """Wall-clock seconds per stage of a tailoring run."""

    calibrate: float = 0.0
    score: float = 0.0
    mask: float = 0.0
    compensate: float = 0.0
    merge: float = 0.0
    write: float = 0.0

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - start)


@dataclass
class TensorStats:
    """What happened to one considered tensor.

    ``changed``: entries the patch sets (for grafting methods: taken from a fine-tuned model);
    ``per_task``: entries each task's mask selected; ``overlap``: entries selected by several tasks;
    ``error_before`` / ``error_after``: per task, the relative layer-output error
    ``||(W - W_ft) X||^2 / ||W_ft X||^2`` on the calibration inputs without / with compensation
    (None where the tensor was not compensated).
    """

    key: str
    numel: int
    changed: int = 0
    per_task: list[int] = field(default_factory=list)
    overlap: int = 0
    error_before: list[float | None] = field(default_factory=list)
    error_after: list[float | None] = field(default_factory=list)

    @property
    def kept_fraction(self) -> float:
        return self.changed / self.numel if self.numel else 0.0


@dataclass
class TailorJob:
    """Inputs of one run: base and fine-tuned checkpoints (under the base's names), the considered keys
    in a fixed order, and calibration statistics per task when the method asked for them."""

    base: Checkpoint
    finetuned: list[Checkpoint]
    keys: list[str]
    calibration: list[CalibrationStats] | None = None
    device: Any = "cpu"
    seconds: StageSeconds = field(default_factory=StageSeconds)


@dataclass
class MethodOutput:
    tensors: dict[str, TensorPatch]
    stats: dict[str, TensorStats]


@dataclass(frozen=True)
class CalibrationNeeds:
    fisher: bool = False
    first_order: bool = False
    hessians: bool = False

    @property
    def any(self) -> bool:
        return self.fisher or self.first_order or self.hessians


@dataclass(frozen=True)
class TailoringMethod:
    """A registered method: its options dataclass, what calibration it needs, and how it runs.
    ``sweeps_sparsity``: a study runs it at each of its sparsities (grafting methods); False: once, at its options
    (merges)."""

    name: str
    config_class: type
    run: Callable[[TailorJob, Any], MethodOutput]
    needs: Callable[[Any], CalibrationNeeds] = lambda config: CalibrationNeeds()
    sweeps_sparsity: bool = False
    description: str = ""  # what `unforget ls tailoring` says about it

    def make_config(self, options: dict[str, Any]) -> Any:
        known = [f.name for f in fields(self.config_class)]
        for name in options:
            if name not in known:
                raise ConfigError(
                    f"tailoring method '{self.name}' has no option '{name}'.{did_you_mean(name, known)} "
                    f"Its options: {', '.join(known)}."
                )
        config = self.config_class(**options)
        validate = getattr(config, "validate", None)
        if validate is not None:
            validate()
        return config


# a method is one module of this package that registers itself: the first lookup imports them all
TAILORING_METHODS: Registry[TailoringMethod] = Registry("tailoring method", package="unforget.tailoring")


def considered_keys(
    checkpoint: Checkpoint, modules: Sequence[str] | None = None, *, matrices_only: bool = True
) -> list[str]:
    """Base tensor names that match any of ``modules`` (regular expressions searched in the saved name or
    in it without its ``model.`` parts, so ``language_model.layers`` works for both naming schemes; plain
    substrings work) and, with ``matrices_only``, are 2-D. Sorted, which fixes the tie-breaking order."""
    if isinstance(modules, str):
        raise ConfigError(f"modules must be a list of name patterns, got the string '{modules}'")
    patterns = list(default_modules(checkpoint) if modules is None else modules)
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise ConfigError(f"module pattern is not a valid regular expression: {exc}") from exc
    keys = [
        key
        for key in checkpoint.keys()
        if any(p.search(key) or p.search(canonical_name(key)) for p in compiled)
        and (not matrices_only or len(checkpoint.info(key).shape) == 2)
    ]
    if not keys:
        examples = ", ".join(sorted(checkpoint.keys())[:4])
        raise ConfigError(
            f"no tensor of {checkpoint.source} matches the module patterns {patterns}"
            f"{' (2-D weights only)' if matrices_only else ''}; its tensors are named like: {examples}"
        )
    return sorted(keys)
