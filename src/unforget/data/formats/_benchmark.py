"""What the benchmark formats (vqa, gqa, pope, coco-captions, karpathy) share: reading their JSON with errors that
name the file, finding an image from candidate paths, the prompts the papers use, an answer-list option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError, DataError
from ._common import class_names_option
from ._table import decode_text

BENCHMARK_METRICS = ("vqa", "exact", "pope")
"""The scorers of evaluation/scorers.py a free-answer set may name (data does not import evaluation)."""
CAPTION_METRICS = ("", "coco")
"""A caption set's metric: "" = CIDEr-D and BLEU-4; "coco" = also METEOR and SPICE (Java; slow to start)."""
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
"""LLaVA-1.5's instruction after VQAv2 / GQA / POPE questions (lmms-eval's default post_prompt)."""
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
"""lmms-eval's COCO / Flickr30k captioning prompt."""


def read_json_file(file: Path, fmt: str) -> Any:
    try:
        return json.loads(decode_text(file))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); is this the "
                        f"file '{fmt}:' expects?") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{file}: not usable JSON ({exc})") from None


def field_of(item: Any, key: str, where: str, kinds: type | tuple[type, ...], hint: str = "") -> Any:
    """``item[key]``, which must exist and be of ``kinds``; the error names where and what was found."""
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(item).__name__}{hint}")
    if key not in item:
        raise DataError(f"{where}: no '{key}' field (fields: {', '.join(map(str, item)) or 'none'}){hint}")
    value = item[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise DataError(f"{where}: '{key}' is {value!r}, expected {_kind_name(kinds)}{hint}")
    return value


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join({str: "text", int: "an integer", list: "a list", dict: "an object"}.get(k, k.__name__)
                       for k in kinds)


def images_folder(images: str | None, file: Path, fmt: str) -> Path:
    """The folder image paths are read from: ``images`` (relative to the file's folder) or the file's folder."""
    if images is None:
        return file.parent
    folder = file.parent / Path(images).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{fmt}: images folder {folder} does not exist (give images= as a folder, absolute or "
                          f"relative to {file.parent})")
    return folder


def find_image(candidates: Sequence[Path], where: str, option_hint: str) -> str:
    """The first existing candidate; the error lists every path tried."""
    for path in candidates:
        if path.is_file():
            return str(path)
    tried = ", ".join(str(p) for p in candidates)
    raise DataError(f"{where}: image not found (tried {tried}); {option_hint}")


def answer_list_option(value: Sequence[str] | str | None, fmt: str) -> list[str]:
    """``answer_list``: answers rank mode ranks over (a list, or a .json list / one-per-line file)."""
    return class_names_option(value, fmt) or [] if value is not None else []


def check_caption_metric(metric: str, fmt: str) -> None:
    if metric not in CAPTION_METRICS:
        raise ConfigError(f"{fmt}: metric '{metric}' is not a caption metric; leave it out (CIDEr-D and BLEU-4) or "
                          "give metric=coco (also METEOR, and SPICE where installed)")
