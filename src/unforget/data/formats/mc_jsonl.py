"""``mc-jsonl``: multiple-choice questions as JSON lines: image path, question, options list, answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError, DataError
from ..choices import LETTERS, POST_PROMPT, answer_letter, choice_dataset, choice_sample, choice_settings, option_texts
from ..types import ImageDataset, Sample
from ._common import SINGLE_SPLIT, existing_file, register_format, wanted_splits
from ._table import _image_path, columns_error
from .jsonl import read_jsonl


def _options(value: Any, where: str) -> dict[str, str]:
    """A list of option texts, or an object keyed A, B, C... in that order."""
    if isinstance(value, dict):
        keys = [str(k).strip().upper() for k in value]
        if keys != list(LETTERS[: len(keys)]):
            raise DataError(f"{where}: option keys {list(value)} must be the letters A, B, C... in order")
        value = list(value.values())
    return option_texts(value, where)


@register_format("mc-jsonl",
                 description="multiple choice as JSON lines: image, question, options (list), answer (letter, index "
                             "or text), optional image_class / hint / split / id; options: matcher=vlmevalkit|strict, "
                             "circular, rank_by=letter|text, post_prompt",
                 source="local JSONL file")
def load_mc_jsonl(
    path: str,
    *,
    image_column: str = "image",
    question_column: str = "question",
    options_column: str = "options",
    answer_column: str = "answer",
    class_column: str = "image_class",
    hint_column: str = "hint",
    id_column: str | None = None,
    split_column: str | None = None,
    image_root: str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    matcher: str = "vlmevalkit",
    circular: bool = False,
    rank_by: str = "letter",
    post_prompt: str = POST_PROMPT,
    name: str | None = None,
) -> ImageDataset:
    """One JSON object per line: ``{"image": "imgs/1.png", "question": "Which bird?", "options": ["crow", "owl"],
    "answer": "B"}``. ``answer`` is the correct option's letter, its 0-based index or its exact text. A row without
    an image (no ``image`` key or null) is a text-only question. ``image_class`` (optional) names the class of the
    image, for the mischoice rate; ``hint`` (optional) is context put before the question. Rows go to the split named
    by ``split_column``, else to ``split``; other keys are kept in ``meta``. Relative image paths are read from the
    file's folder, or from ``image_root``."""
    file = existing_file(path, "mc-jsonl")
    settings = choice_settings(matcher, circular, rank_by, "mc-jsonl")
    base = file.parent if image_root is None else file.parent / Path(image_root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"mc-jsonl: image_root {base} is not a folder")
    rows = read_jsonl(file)
    if not rows:
        raise DataError(f"{file}: no rows; expected one JSON object per question")
    for lineno, row in rows:
        for column, option in [(question_column, "question_column"), (options_column, "options_column"),
                               (answer_column, "answer_column"), (id_column, "id_column"),
                               (split_column, "split_column")]:
            if column is not None and column not in row:
                raise columns_error(f"{file}:{lineno}", list(row), column, option)
    row_splits = [str(row[split_column]).strip() if split_column else split for _, row in rows]
    chosen = wanted_splits(list(dict.fromkeys(row_splits)), splits, f"mc-jsonl file {file}")
    used = {image_column, question_column, options_column, answer_column, class_column, hint_column, id_column,
            split_column}
    out: dict[str, list[Sample]] = {s: [] for s in chosen}
    first_line: dict[str, int] = {}
    for (lineno, row), row_split in zip(rows, row_splits):
        if row_split not in out:
            continue
        where = f"{file}:{lineno}"
        sample_id = str(row[id_column]).strip() if id_column else f"line-{lineno}"
        if not sample_id:
            raise DataError(f"{where}: column '{id_column}' (the sample id) is empty")
        if sample_id in first_line:
            raise DataError(f"{where}: sample id '{sample_id}' was already used on line {first_line[sample_id]}; "
                            "ids must be unique")
        first_line[sample_id] = lineno
        options = _options(row[options_column], f"{where} (column '{options_column}')")
        answer = answer_letter(row[answer_column], options, f"{where} (column '{answer_column}')")
        raw_image = row.get(image_column)
        image = None if raw_image is None else _image_path(raw_image, base, where, image_column)
        hint = row.get(hint_column)
        if hint is not None and not isinstance(hint, str):
            raise DataError(f"{where}: column '{hint_column}' (the hint) must be text, found {type(hint).__name__}")
        meta = {k: v for k, v in row.items() if k not in used}
        meta["line"] = lineno
        out[row_split].append(choice_sample(
            sample_id, image, row[question_column] if isinstance(row[question_column], str) else "", options, answer,
            hint=hint, image_class=row.get(class_column), post_prompt=post_prompt, meta=meta,
            where=f"{where} (column '{question_column}')"))
    return choice_dataset(name or file.stem, out, settings, source=str(file),
                          description=f"multiple-choice JSONL rows from {file}")
