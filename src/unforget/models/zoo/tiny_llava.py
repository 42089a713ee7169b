"""tiny-llava: the embedded default model, committed inside the package and rebuilt by its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import ZOO, ZOO_DIR, ZooModel


def _build(out_dir: Path, **options: Any) -> Path:
    from .tiny_llava_recipe import build_tiny_llava

    return build_tiny_llava(out_dir, **options)


ZOO.register(
    "tiny-llava",
    ZooModel(
        name="tiny-llava",
        description="embedded default: a tiny LLaVA (CLIP ViT + Llama) trained here on the embedded datasets",
        shipped=ZOO_DIR / "tiny-llava",
        build=_build,
    ),
    description="embedded default: a tiny LLaVA trained on the embedded datasets (shipped)",
)
