"""tiny-llava: the embedded default model, committed inside the package (``tiny-llava/``) and rebuilt by its recipe
(:mod:`unforget.zoo.tiny_llava`)."""

from __future__ import annotations

from . import ZOO, ZOO_DIR, ZooModel

ZOO.register(
    ZooModel(
        name="tiny-llava",
        description="embedded default: a tiny LLaVA trained on the embedded datasets (shipped)",
        shipped=ZOO_DIR / "tiny-llava",
    )
)
