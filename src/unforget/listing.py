"""What exists: the tables behind `unforget ls` (models, datasets, formats, judges, methods, studies, configs)."""

from __future__ import annotations

import importlib
from typing import Any, Iterator

Table = tuple[str, list[str], list[list[Any]]]


def _registry(module: str, attr: str):
    try:
        return getattr(importlib.import_module(module), attr)
    except (ModuleNotFoundError, AttributeError):
        return None


def catalogue(what: str = "all") -> Iterator[Table]:
    if what in ("all", "models"):
        from .models.zoo import ZOO

        rows = []
        for e in ZOO.entries():
            try:
                where = str(e.obj.folder())
            except Exception as exc:  # not built yet: say how
                where = str(exc)
            rows.append([e.name, e.description, where])
        rows.append(["<folder or hub id>", "any HF LLaVA-family model (llava, llava_next, qwen2_vl, qwen2_5_vl, "
                     "idefics3, smolvlm, instructblip)", "--model PATH"])
        yield "models", ["name", "description", "where"], rows
    if what in ("all", "datasets"):
        from .data import DATASETS

        rows = [[e.name, e.meta.get("task", ""), e.meta.get("classes", ""), e.meta.get("train", ""),
                 e.meta.get("test", ""), e.meta.get("role", ""), e.meta.get("source", "")] for e in DATASETS.entries()]
        yield "datasets", ["name", "task", "classes", "train", "test", "role", "source"], rows
    if what in ("all", "formats", "datasets"):
        from .data import FORMATS

        rows = [[f"{e.name}:PATH", e.description, e.meta.get("source", "")] for e in FORMATS.entries()]
        yield "dataset formats (--datasets FORMAT:PATH)", ["format", "description", "layout"], rows
    specs = [("judges", "unforget.evaluation.judges.base", "JUDGES"),
             ("methods", "unforget.training.methods.base", "METHODS"),
             ("tailoring", "unforget.tailoring.base", "TAILORING_METHODS"),
             ("studies", "unforget.studies.base", "STUDIES")]
    for name, module, attr in specs:
        if what in ("all", name):
            reg = _registry(module, attr)
            rows = [[e.name, e.description] for e in reg.entries()] if reg is not None else []
            yield name if name != "methods" else "fine-tuning methods", ["name", "description"], rows
    if what in ("all", "configs"):
        from .config import list_configs

        yield "configs (unforget config show NAME)", ["name"], [[c] for c in list_configs()]
