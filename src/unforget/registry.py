"""One small generic registry: name -> object, with "did you mean" on typos, members found rather than listed.

Models, datasets, formats, judges, fine-tuning and tailoring methods, regularizers, studies and reports are all
looked up by name through a :class:`Registry`, the way lm-evaluation-harness resolves tasks and peft resolves tuner
types. A registry made with ``package=`` finds its members itself: on the first lookup it imports every module and
subpackage in that package's folder (subfolders included, ``_private`` ones left out), and each member's module
registers it. Adding a member is then one new file (or folder) in that package, and nothing else::

    # src/unforget/evaluation/judges/my_judge.py
    class MyJudge:
        name = "mine"
        description = "what `unforget ls judges` says about it"
        ...

    JUDGES.register(MyJudge)

An entry's name and description are the object's own (``obj.name``, ``obj.description``), given once. An object
that carries no name (a loader function) is registered as ``register(name, obj, description=...)``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

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


def package_modules(package: str) -> Iterator[str]:
    """The dotted names of every public module and subpackage under ``package``'s folder(s), subfolders included,
    in a fixed order; a ``_``-prefixed module or folder is private and left out. Importing a subpackage to look
    inside it is part of the walk. The folders are the package's ``__path__``, so a folder appended to it is
    searched too."""
    pkg = importlib.import_module(package)
    names = sorted({(info.name, info.ispkg) for info in pkgutil.iter_modules(list(pkg.__path__))})
    for name, ispkg in names:
        if name.startswith("_"):
            continue
        dotted = f"{package}.{name}"
        yield dotted
        if ispkg:
            yield from package_modules(dotted)


def _own(obj: Any, attribute: str) -> str | None:
    """``obj.<attribute>`` when the object carries it as a string (a member's own name or description)."""
    value = getattr(obj, attribute, None)
    return value if isinstance(value, str) else None


class Registry(Generic[T]):
    """Name -> object. With ``package``, the first lookup imports every public module of that package (its
    members register themselves as they are imported; the module that made the registry, its ``base.py``, is
    already imported by then); without, the members are registered by the registry's own module."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}
        self._scanned = package is None

    def register(self, name_or_obj: Any, obj: Any = None, *, description: str = "", **meta: Any) -> Any:
        """Register an object under its own name and description: ``register(obj)`` (also a class decorator).

        An object that carries no name (a loader function) is registered as ``register(name, obj,
        description=...)``, or with ``@register(name, description=...)``; its description defaults to the first
        line of its docstring. ``meta`` are extra columns for `unforget ls` (a dataset's task, a format's layout).
        A name or description passed for an object that carries its own is refused unless it is the same name, so
        the two cannot differ."""
        if not isinstance(name_or_obj, str):
            if obj is not None:
                raise RegistryError(f"register(obj) takes the {self.kind}'s name from obj.name; pass one object")
            return self._add(name_or_obj, None, description, meta)
        if obj is None:
            return lambda o: self._add(o, name_or_obj, description, meta)
        return self._add(obj, name_or_obj, description, meta)

    def _add(self, obj: T, name: str | None, description: str, meta: dict[str, Any]) -> T:
        own_name, own_description = _own(obj, "name"), _own(obj, "description")
        if name is None:
            if not own_name:
                raise RegistryError(f"a {self.kind} registered without a name must carry one (obj.name): "
                                    "register(name, obj, description=...) for an object that has none")
            name = own_name
        elif own_name is not None and own_name != name:
            raise RegistryError(f"{self.kind} '{own_name}' is registered as '{name}': register(obj) takes the name "
                                "from the object, give it once")
        if own_description is not None and description:
            raise RegistryError(f"{self.kind} '{name}' is described twice: give its description once, on the object")
        if own_description is None and not description and (inspect.isclass(obj) or inspect.isroutine(obj)):
            description = (obj.__doc__ or "").strip().split("\n")[0]
        known = self._entries.get(name)
        if known is not None and known.obj is not obj:
            raise RegistryError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = Entry(name, obj, own_description if own_description is not None else description,
                                    dict(meta))
        return obj

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a member registered for a test, a plugin unloaded)."""
        self._entries.pop(name, None)

    def rescan(self) -> None:
        """Look through the package folder again, so that a module added since registers (a folder appended to
        the package's ``__path__``); the modules imported before are not imported twice."""
        self._scanned = self.package is None
        self._load()

    def _load(self) -> None:
        if self._scanned:
            return
        self._scanned = True  # first, so that a member looking something up as it is imported does not scan again
        for module in package_modules(self.package or ""):
            importlib.import_module(module)

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

