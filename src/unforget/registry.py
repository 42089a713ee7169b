"""One small generic registry: name -> object, with "did you mean" on typos.

Models, datasets, judges, fine-tuning methods, tailoring methods and studies are all looked up by
name through a :class:`Registry`, the way lm-evaluation-harness resolves tasks and peft resolves
tuner types. Adding an entry touches one new file: the file calls ``REGISTRY.register(...)``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import RegistryError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A " Did you mean 'x'?" suffix for an unknown ``name`` (empty when nothing is close)."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object. ``modules`` are imported lazily on first lookup so that entries register themselves."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._modules = modules
        self._imported = False

    def register(self, name: str, obj: T | None = None, *, description: str = "", **meta: Any) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._entries and self._entries[name].obj is not o:
                raise RegistryError(f"{self.kind} '{name}' is registered twice")
            doc = description or (o.__doc__ or "").strip().split("\n")[0] if hasattr(o, "__doc__") else description
            self._entries[name] = Entry(name, o, doc or "", dict(meta))
            return o

        if obj is None:
            return add
        return add(obj)

    def _load(self) -> None:
        if not self._imported:
            self._imported = True
            for mod in self._modules:
                importlib.import_module(mod)

    def entry(self, name: str) -> Entry[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, known)} "
                f"Known {self.kind}s: {', '.join(known) or '(none yet)'}."
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        self._load()
        for name in sorted(self._entries):
            yield self._entries[name]


Factory = Callable[..., Any]
