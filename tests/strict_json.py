"""Strict JSON: every .json and .jsonl file under a folder parsed the way strict parsers (JavaScript's JSON.parse,
jq, Go, Rust serde) do, where Python's json would accept the bare NaN / Infinity it writes by default."""

from __future__ import annotations

import json
from pathlib import Path


def _reject(constant: str) -> None:
    raise ValueError(f"bare {constant} (not JSON)")


def strict_loads(text: str) -> object:
    return json.loads(text, parse_constant=_reject)


def non_strict_json(folder: str | Path) -> tuple[int, list[str]]:
    """(files checked, one line per file that a strict parser rejects: its path and why)."""
    checked, problems = 0, []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix not in (".json", ".jsonl"):
            continue
        checked += 1
        text = path.read_text(encoding="utf-8")
        chunks = [(1, text)] if path.suffix == ".json" else [
            (i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        for line_no, chunk in chunks:
            try:
                strict_loads(chunk)
            except ValueError as exc:  # JSONDecodeError is a ValueError
                problems.append(f"{path.relative_to(folder)}:{line_no}: {exc}")
                break
    return checked, problems


def assert_strict_json(folder: str | Path, at_least: int = 1) -> int:
    """Every JSON / JSONL file under ``folder`` parses strictly (no NaN, no Infinity); returns how many there are."""
    checked, problems = non_strict_json(folder)
    assert checked >= at_least, f"{folder}: only {checked} JSON files, expected at least {at_least}"
    assert not problems, "files a strict JSON parser rejects:\n" + "\n".join(problems)
    return checked
