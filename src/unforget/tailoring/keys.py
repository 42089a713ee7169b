"""Match tensor names across naming schemes (checkpoint keys, in-memory module names, peft paths).

transformers saves LLaVA as ``language_model.model.layers.0...`` while the loaded module calls the same
tensor ``model.language_model.layers.0...`` and peft adapters use the module name. Names are compared
after dropping the ``model`` / ``base_model`` path components, then by a unique suffix, so a tensor is
found under any of these schemes without depending on one transformers version's renaming tables.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from ..errors import ModelLoadError

_WRAPPER_PARTS = frozenset({"model", "base_model"})


def canonical_name(name: str) -> str:
    """``name`` without the wrapper components that differ between naming schemes."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def match_keys(
    sources: Iterable[str], targets: Iterable[str], *, what: str = "tensor", strict: bool = True
) -> dict[str, str]:
    """Map each name in ``sources`` onto one name in ``targets``.

    Exact names first, then equal canonical names, then a unique canonical suffix match
    (``lm_head.weight`` <-> ``language_model.lm_head.weight``). With ``strict`` an unmatched or ambiguous
    source raises :class:`ModelLoadError` naming it; otherwise it is left out of the result.
    """
    target_list = list(targets)
    target_set = set(target_list)
    by_canonical: dict[str, list[str]] = defaultdict(list)
    for target in target_list:
        by_canonical[canonical_name(target)].append(target)
    mapping: dict[str, str] = {}
    for source in sources:
        if source in target_set:
            mapping[source] = source
            continue
        canon = canonical_name(source)
        found = by_canonical.get(canon, [])
        if not found:
            found = [
                t
                for c, ts in by_canonical.items()
                if c.endswith("." + canon) or canon.endswith("." + c)
                for t in ts
            ]
        if len(found) == 1:
            mapping[source] = found[0]
        elif strict:
            examples = ", ".join(sorted(target_list)[:3])
            problem = "matches several tensors (" + ", ".join(found[:3]) + ")" if found else "has no counterpart"
            raise ModelLoadError(
                f"{what} '{source}' {problem} in the other model (e.g. {examples}). The two checkpoints do "
                "not have the same architecture: check that the fine-tuned model was trained from this base."
            )
    return mapping
