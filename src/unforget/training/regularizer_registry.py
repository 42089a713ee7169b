"""The regularizers' registry (``l2``, ``ewc``, ``lwf``), apart from the regularizers themselves.

:class:`~unforget.training.config.RegularizerConfig` checks a regularizer's name and options through it, while the
regularizers (training/regularizers.py) build on training.config's TrainDataConfig and on training.data: kept here,
the registry lets the config import it and the regularizers import the config, with no import cycle. Its members
are the ``REGULARIZERS.register(RegularizerKind(...))`` calls of that one module, imported on the first lookup as a
package-scanning registry imports its folder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..config import from_dict
from ..registry import Registry

MEMBER_MODULE = "unforget.training.regularizers"  # the module whose import registers every regularizer


@dataclass(frozen=True)
class RegularizerKind:
    """A regularizer by name: its options dataclass and ``build(options, BuildContext) -> Regularizer``
    (both types in training/regularizers.py)."""

    name: str
    options_class: type
    build: Callable[[Any, Any], Any]
    description: str = ""  # what `unforget ls regularizers` says about it

    def parse_options(self, options: Mapping[str, Any] | None) -> Any:
        return from_dict(self.options_class, dict(options or {}), where=f"regularizer.options ({self.name})")


class RegularizerRegistry(Registry[RegularizerKind]):
    """A registry whose members are registered by one module (:data:`MEMBER_MODULE`), not a folder of them."""

    def __init__(self) -> None:
        super().__init__("regularizer")
        self._scanned = False

    def _load(self) -> None:
        if self._scanned:
            return
        self._scanned = True  # first, as Registry._load does: a lookup while the module is imported does not recurse
        importlib.import_module(MEMBER_MODULE)


REGULARIZERS = RegularizerRegistry()
