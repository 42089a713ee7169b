"""Models built on the meta device: the real architecture and parameter shapes, no memory, no download.

The configs of the 7B models the shipped studies name are kept as data in ``models/configs/`` (copies of the hub's
config.json), so planning works offline; any other model is planned from a local folder's or the hub cache's
config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from ..errors import ModelLoadError
from ..models.loading import resolve_model_path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "configs"

# hub id -> the shipped copy of its config.json
KNOWN_CONFIGS = {
    "llava-hf/llava-1.5-7b-hf": "llava-1.5-7b-hf.json",
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl-7b-instruct.json",
}


def shipped_config_path(name: str) -> Path | None:
    """The shipped config.json of a hub id (or of its file stem, ``llava-1.5-7b-hf``), else None."""
    file = KNOWN_CONFIGS.get(name) or next((f for f in KNOWN_CONFIGS.values() if Path(f).stem == name), None)
    return CONFIG_DIR / file if file else None


def load_model_config(name_or_path: str) -> Any:
    """A transformers config: shipped copy of a known hub id, a config.json file, a model folder, or the hub."""
    shipped = shipped_config_path(name_or_path)
    if shipped is not None:
        return AutoConfig.from_pretrained(str(shipped))
    path = resolve_model_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"no config for '{name_or_path}': not one of the shipped configs ({', '.join(KNOWN_CONFIGS)}), not a "
            f"folder with config.json, and not in the hub cache. Pass a folder or a config.json file. ({exc})"
        ) from exc


def meta_model(config_or_name: Any, dtype: torch.dtype = torch.bfloat16) -> Any:
    """The model of ``config_or_name`` with every parameter on the meta device, in ``dtype``."""
    config = load_model_config(config_or_name) if isinstance(config_or_name, str) else config_or_name
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, dtype=dtype)


def repeated_block_classes(model: Any) -> list[str]:
    """The transformer block classes FSDP should wrap one by one: the model's ``_no_split_modules`` that occur more
    than once (decoder layers, vision encoder layers; not the embeddings, which occur once). Sorted by name."""
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    counts: dict[str, int] = {}
    for module in model.modules():
        name = type(module).__name__
        if name in no_split:
            counts[name] = counts.get(name, 0) + 1
    return sorted(n for n, c in counts.items() if c > 1)
