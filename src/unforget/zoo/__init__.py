"""Recipes of the embedded models (``unforget zoo build NAME``), built from the same library parts as everything
else: the training examples, ``set_trainable``, the one generation path, the evaluator, the zero-shot classifier.

:mod:`unforget.models.zoo` names the models and finds their folders (what loading needs); this package holds how
each is made. :data:`RECIPES` maps a zoo name to its build, ``build(out_dir, seed=0, **options) -> folder``; a zoo
model without an entry is committed as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UnforgetError
from .smol_llava.recipe import build as build_smol_llava
from .tiny_llava.recipe import build_tiny_llava

Build = Callable[..., Path]

RECIPES: dict[str, Build] = {
    "tiny-llava": build_tiny_llava,
    "smol-llava": build_smol_llava,
}


def recipe_for(name: str) -> Build:
    """The build of zoo model ``name``; a model without a recipe is refused."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnforgetError(f"zoo model '{name}' has no build recipe") from None
