"""Named models shipped with or built by unforget (``unforget zoo``): their names, where their folders are, and
the committed weights. How each is made (its recipe, ``unforget zoo build NAME``) lives in :mod:`unforget.zoo`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import ModelLoadError
from ...registry import Registry

ZOO_DIR = Path(__file__).parent


def cache_dir() -> Path:
    """Where built models live: $UNFORGET_CACHE, else ~/.cache/unforget."""
    return Path(os.environ.get("UNFORGET_CACHE", Path.home() / ".cache" / "unforget")).expanduser()


@dataclass
class ZooModel:
    name: str
    description: str
    shipped: Path | None  # folder committed inside the package, if any (else built into the cache)
    install_hint: str = ""

    def folder(self) -> Path:
        if self.shipped is not None and (self.shipped / "config.json").is_file():
            return self.shipped
        built = cache_dir() / "models" / self.name
        if (built / "config.json").is_file():
            return built
        raise ModelLoadError(
            f"model '{self.name}' is not built yet: run `unforget zoo build {self.name}`"
            + (f" ({self.install_hint})" if self.install_hint else "")
        )


ZOO: Registry[ZooModel] = Registry("model", package="unforget.models.zoo")


def resolve_zoo_name(name: str) -> Path | None:
    if name in ZOO:
        return ZOO.get(name).folder()
    return None
