"""Short, distinct labels for dataset references in tables and plot legends.

Records are keyed by the dataset reference as written (``digits``, ``mnist-idx:/a/mnist``,
``scenes-vqa?qtypes=colour``, ``sets/flowers.yaml``). A report shows:

- a registered name as it is (``digits``, ``scenes-vqa?qtypes=colour``);
- a ``format:path`` reference by its path's last component (``mnist``) when no other reference gets that label,
  otherwise by its shortest path suffix that tells it apart (``a/mnist``, ``b/mnist``); query options stay
  (``mnist?n_test=5``), so two subsets of one folder stay apart;
- a dataset YAML file by its stem (``flowers``), extended the same way (``sets/flowers``).

A reference whose whole path still matches another's label (``imagefolder:/x`` and ``cifar:/x``) is shown in full.
The labels are worked out from the text alone: a report never looks at the files the references name.
"""

from __future__ import annotations

import re
from typing import Sequence

# key=value pairs joined by '&' after the last '?' (the query of unforget.data.registry.split_query)
_QUERY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^&]*(?:&[A-Za-z_][A-Za-z0-9_]*=[^&]*)*")
# "format:path": a format name of two or more characters (one letter is a Windows drive)
_FORMAT = re.compile(r"([A-Za-z][A-Za-z0-9_.+-]+):(.*)")
_YAML_SUFFIXES = (".yaml", ".yml")


def _path_parts(ref: str) -> tuple[list[str], str] | None:
    """(path components, "?query" or "") of a format or YAML reference; None for a registered name."""
    base, query = ref, ""
    if "?" in ref:
        head, tail = ref.rsplit("?", 1)
        if head and _QUERY.fullmatch(tail):
            base, query = head, f"?{tail}"
    match = _FORMAT.fullmatch(base)
    if match:
        path = match.group(2)
    elif base.lower().endswith(_YAML_SUFFIXES):
        path = base
    else:
        return None
    parts = [p for p in re.split(r"[/\\]", path) if p not in ("", ".")]
    if not parts:
        return None
    last = parts[-1]
    if last.lower().endswith(_YAML_SUFFIXES):
        parts[-1] = last.rsplit(".", 1)[0] or last
    return parts, query


def display_names(refs: Sequence[str]) -> dict[str, str]:
    """Each reference's label (see the module doc): distinct whenever the references are distinct."""
    unique = list(dict.fromkeys(refs))
    labels = {ref: ref for ref in unique}
    paths = {ref: parsed for ref in unique if (parsed := _path_parts(ref)) is not None}
    depth = {ref: 1 for ref in paths}
    full: set[str] = set()

    def label(ref: str) -> str:
        parts, query = paths[ref]
        return "/".join(parts[-depth[ref]:]) + query

    while True:
        for ref in paths:
            labels[ref] = ref if ref in full else label(ref)
        taken: dict[str, list[str]] = {}
        for ref, text in labels.items():
            taken.setdefault(text, []).append(ref)
        clashes = [ref for group in taken.values() if len(group) > 1 for ref in group if ref in paths
                   and ref not in full]
        if not clashes:
            return labels
        for ref in clashes:
            if depth[ref] < len(paths[ref][0]):
                depth[ref] += 1
            else:
                full.add(ref)  # the whole path is shared (two formats on one folder): show the reference


def named_refs(refs: Sequence[str], names: dict[str, str] | None = None) -> str:
    """``"a/mnist = mnist-idx:/a/mnist, digits"``: the labels with the references they stand for (a run's facts)."""
    names = names or display_names(refs)
    return ", ".join(names[r] if names[r] == r else f"{names[r]} = {r}" for r in dict.fromkeys(refs))
