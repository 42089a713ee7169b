"""Dataclass configs loaded from YAML with dotted command-line overrides (``train.lr=2e-5``).

Unknown keys fail with a "did you mean" message; the resolved config is written into every run folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .registry import did_you_mean

C = TypeVar("C")

CONFIG_ROOTS = (Path("configs"), Path(__file__).parent / "configs")


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # type: ignore[return-value]
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's type, with a clear error."""
    base, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional or base is Any:
            return None
        raise ConfigError(f"{where}: a value is required")
    if base is Any:
        return value
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {base.__name__} keys, got {value!r}")
        return from_dict(base, value, where)
    origin = get_origin(base)
    if origin in (list, tuple, Sequence, typing.Sequence):
        (item_tp, *_) = get_args(base) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        choices = get_args(base)
        if value not in choices:
            raise ConfigError(
                f"{where}: '{value}' is not one of {', '.join(map(str, choices))}.{did_you_mean(str(value), [str(c) for c in choices])}"
            )
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(base):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {base}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {base.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys are errors with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'.{did_you_mean(str(key), names)} Valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. train.lr=2e-5)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """Set dotted keys in ``data``; with ``cls`` given, each key is checked against the dataclass tree."""
    for text in overrides:
        keys, value = parse_override(text)
        if cls is not None:
            _check_path(cls, keys)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {}
                node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return data


def _check_path(cls: type, keys: list[str]) -> None:
    current: Any = cls
    for i, key in enumerate(keys):
        if get_origin(current) is dict or current is dict or current is Any:
            return  # free-form mapping (e.g. method_options): any sub-key is the user's to choose
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"override '{'.'.join(keys)}': '{'.'.join(keys[:i])}' has no sub-keys")
        names = [f.name for f in dataclasses.fields(current)]
        if key not in names:
            where = ".".join(keys[: i + 1])
            raise ConfigError(f"unknown config key '{where}'.{did_you_mean(key, names)} Valid keys here: {', '.join(names)}")
        current, _ = _strip_optional(_field_types(current)[key])


def find_config(name: str) -> Path:
    """A config by path, or by shipped name (``emt/quickstart`` -> configs/emt/quickstart.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    for root in CONFIG_ROOTS:
        for candidate in (root / name, root / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    known = list_configs()
    raise ConfigError(f"no config '{name}'.{did_you_mean(name, known)} Shipped configs: {', '.join(known) or '(none)'}")


def list_configs() -> list[str]:
    names: set[str] = set()
    for root in CONFIG_ROOTS:
        if root.is_dir():
            names.update(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return sorted(names)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> C:
    """YAML file (optional) + ``base`` values (from CLI flags) + dotted overrides -> dataclass ``cls``."""
    data: dict[str, Any] = read_yaml(find_config(str(path))) if path else {}
    if base:
        data = _deep_merge(data, base)
    apply_overrides(data, overrides, cls)
    return from_dict(cls, data)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)
