"""Rows of a table (JSONL objects, CSV rows, Hugging Face columns) -> samples: columns, questions, answers, labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...errors import BadSampleError, ConfigError, DataError
from ...registry import did_you_mean
from ..types import ImageDataset, Sample
from ._common import class_names_option, templates_or_default, wanted_splits

Row = tuple[int, dict[str, Any]]
"""(line number, the row's columns)."""


def decode_text(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{file}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as "
                        "UTF-8") from None


def columns_error(where: str, found: Sequence[str], missing: str, option: str, hint: str = "") -> DataError:
    return DataError(f"{where}: no column '{missing}'.{did_you_mean(missing, list(found))} Columns found: "
                     f"{', '.join(found) or '(none)'}. Set {option}= to use another column.{hint}")


def _label_hint(columns: Sequence[str] | Mapping[str, Any], label_column: str | None) -> str:
    found = next((c for c in ("label", "class") if c in columns), None)
    return f" For classification set label_column='{found}'." if found and not label_column else ""


def sample_question(value: Any, *, required: bool, where: str) -> str | None:
    """A sample's own question; VQA rows need one, classification rows may carry one instead of the template."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DataError(f"{where}: the question is empty; VQA rows need a question")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: the question must be text, found {type(value).__name__}")
    return value


def sample_answer(value: Any, where: str) -> tuple[str, list[str] | None]:
    """The reference answer; a list of answers (VQAv2 style) gives the most common one plus the list."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: the answer is {value!r}; expected non-empty text")
    if isinstance(value, (str, int, float)):
        return str(value), None
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        answers = [str(v) for v in value]
        return Counter(answers).most_common(1)[0][0], answers
    raise DataError(f"{where}: the answer must be text or a list of texts, found {type(value).__name__}")


def _as_index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        return int(value)
    return None


def index_labels(values: list[Any], class_names: list[str] | None,
                  where: Callable[[int], str]) -> tuple[list[int], list[str]]:
    """Label values -> (indices, class list). Integers are indices; strings are class names, or indices
    written in digits when they name no class (CSV has only strings). Without ``class_names`` the class list
    is the sorted unique names, or "0".."max" when every label is an integer."""
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()) or not isinstance(v, (str, int, np.integer)):
            raise DataError(f"{where(i)}: label {v!r} is empty or not a class name / index")
    if class_names is None:
        indices = [_as_index(v) for v in values]
        if all(ix is not None for ix in indices):
            class_names = [str(c) for c in range(max([0, *indices]) + 1)]  # type: ignore[type-var]
        else:
            class_names = sorted({str(v).strip() for v in values})
    position = {n: i for i, n in enumerate(class_names)}
    labels: list[int] = []
    for i, v in enumerate(values):
        key = str(v).strip()
        if isinstance(v, str) and key in position:
            labels.append(position[key])
            continue
        ix = _as_index(v)
        if ix is None:
            shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
            raise BadSampleError(f"{where(i)}: label '{key}' is not a class name ({shown}); fix the label or "
                                 "class_names", sample_id=str(i))
        if not 0 <= ix < len(class_names):
            raise BadSampleError(f"{where(i)}: label {ix} is outside the class list (0..{len(class_names) - 1}); "
                                 "fix the label or class_names", sample_id=str(i))
        labels.append(ix)
    return labels, class_names


def _image_path(value: Any, base: Path, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: column '{column}' must hold an image path, found {value!r}")
    if "://" in value:
        raise DataError(f"{where}: '{value}' is a URL; unforget never downloads: fetch the images and give "
                        "local paths")
    file = Path(value.strip()).expanduser()
    file = file if file.is_absolute() else base / file
    if not file.is_file():
        raise DataError(f"{where}: image file {file} does not exist (column '{column}' is '{value}'; relative "
                        f"paths are read from {base})")
    return str(file)


def table_dataset(
    file: Path, columns_seen: Sequence[str] | None, rows: list[Row], *, fmt: str, image_column: str,
    question_column: str, answer_column: str, label_column: str | None, split_column: str | None,
    id_column: str | None, class_names: Sequence[str] | str | None, image_root: str | None, split: str,
    splits: Sequence[str] | str | None, templates: Sequence[str] | None, name: str | None,
) -> ImageDataset:
    """Rows of a JSONL / CSV file -> ImageDataset. ``columns_seen`` is the CSV header (None for JSONL)."""
    base = file.parent
    if image_root is not None:
        base = file.parent / Path(image_root).expanduser()  # an absolute image_root replaces file.parent
        if not base.is_dir():
            raise ConfigError(f"{fmt}: image_root {base} is not a folder")
    required = [(image_column, "image_column")]
    if label_column:
        required.append((label_column, "label_column"))
    else:
        required += [(question_column, "question_column"), (answer_column, "answer_column")]
    for column, option in [*required, (split_column, "split_column"), (id_column, "id_column")]:
        if column is None:
            continue
        if columns_seen is not None and column not in columns_seen:
            raise columns_error(f"{file}:1 (header)", columns_seen, column, option,
                                 _label_hint(columns_seen, label_column))
        for lineno, row in rows:
            if column not in row:
                raise columns_error(f"{file}:{lineno}", list(row), column, option, _label_hint(row, label_column))
    if not rows:
        raise DataError(f"{file}: no rows; expected one {'JSON object' if fmt == 'jsonl' else 'row'} per sample")

    def where(lineno: int) -> str:
        return f"{file}:{lineno}"

    names: list[str] = []
    labels: list[int | None] = [None] * len(rows)
    if label_column:  # over all rows, so the class list does not depend on which splits are loaded
        given = class_names_option(class_names, fmt)
        labels, names = index_labels([row[label_column] for _, row in rows], given,  # type: ignore[assignment]
                                      lambda i: f"{where(rows[i][0])} (column '{label_column}')")
    row_splits: list[str] = []
    for lineno, row in rows:
        value = row[split_column] if split_column else split
        if not isinstance(value, (str, int)) or not str(value).strip():
            raise DataError(f"{where(lineno)}: column '{split_column}' (the split) is empty")
        row_splits.append(str(value).strip())
    chosen = wanted_splits(list(dict.fromkeys(row_splits)), splits, f"{fmt} file {file}")
    used = {image_column, question_column, answer_column, label_column, split_column, id_column}
    out: dict[str, list[Sample]] = {s: [] for s in chosen}
    first_line: dict[str, int] = {}
    for (lineno, row), label, row_split in zip(rows, labels, row_splits):
        if row_split not in out:
            continue
        sample_id = str(row[id_column]).strip() if id_column else f"line-{lineno}"
        if not sample_id:
            raise DataError(f"{where(lineno)}: column '{id_column}' (the sample id) is empty")
        if sample_id in first_line:
            raise DataError(f"{where(lineno)}: sample id '{sample_id}' was already used on line "
                            f"{first_line[sample_id]}; ids must be unique")
        first_line[sample_id] = lineno
        image = _image_path(row[image_column], base, where(lineno), image_column)
        question = sample_question(row.get(question_column), required=label_column is None,
                             where=f"{where(lineno)} (column '{question_column}')")
        answer, answers = (None, None)
        if label_column is None or answer_column in row:
            answer, answers = sample_answer(row[answer_column], f"{where(lineno)} (column '{answer_column}')")
        meta = {k: v for k, v in row.items() if k not in used}
        meta["line"] = lineno
        if answers is not None:
            meta["answers"] = answers
        out[row_split].append(Sample(id=sample_id, image=image, label=label, question=question,
                                     answer=answer, meta=meta))
    ds = ImageDataset(
        name=name or file.stem, task="classification" if label_column else "vqa", splits=out, class_names=names,
        templates=templates_or_default(templates) if label_column else list(templates or []), source=str(file),
        description=f"{fmt.upper()} rows from {file}",
    )
    ds.check_labels()
    return ds
