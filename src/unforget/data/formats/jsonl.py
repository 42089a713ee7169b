"""``jsonl``: JSON lines of image path + question + answer (VQA) or + label (classification)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset
from ._common import SINGLE_SPLIT, existing_file, register_format
from ._table import Row, decode_text, table_dataset

def read_jsonl(path: str | Path) -> list[Row]:
    """The JSON objects of a JSONL file with their line numbers; blank lines are skipped."""
    file = Path(path)
    rows: list[Row] = []
    # split on "\n" only: str.splitlines() also breaks at U+2028 & co, which JSON allows inside strings
    for lineno, line in enumerate(decode_text(file).split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove "
                            "this line") from None
        except (ValueError, RecursionError) as exc:  # e.g. an integer too long, nesting too deep
            raise DataError(f"{file}:{lineno}: not usable JSON ({exc}); fix or remove this line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{file}:{lineno}: expected a JSON object per line, found {type(obj).__name__}")
        rows.append((lineno, obj))
    return rows


@register_format("jsonl",
                 description="JSON lines of image path + question + answer (or label); paths relative to the file",
                 source="local JSONL file")
def load_jsonl(
    path: str,
    *,
    image_column: str = "image",
    question_column: str = "question",
    answer_column: str = "answer",
    label_column: str | None = None,
    split_column: str | None = None,
    id_column: str | None = None,
    class_names: Sequence[str] | str | None = None,
    image_root: str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """One JSON object per line: ``{"image": "imgs/1.png", "question": "...", "answer": "..."}`` (VQA) or, with
    ``label_column``, a classification set whose class list is ``class_names`` or the sorted label values.
    Rows go to the split named by ``split_column``, else to ``split``; other columns are kept in ``meta``.
    Relative image paths are read from the file's folder, or from ``image_root`` (relative to that folder)."""
    file = existing_file(path, "jsonl")
    return table_dataset(
        file, None, read_jsonl(file), fmt="jsonl", image_column=image_column, question_column=question_column,
        answer_column=answer_column, label_column=label_column, split_column=split_column, id_column=id_column,
        class_names=class_names, image_root=image_root, split=split, splits=splits, templates=templates,
        name=name,
    )
