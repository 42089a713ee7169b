"""``mmbench-tsv``: the MMBench / VLMEvalKit multiple-choice TSV (index, question, hint, A..D, answer, base64 image,
category), read as VLMEvalKit reads it (vlmeval/dataset/image_base.py, image_mcq.py)."""

from __future__ import annotations

import base64
import binascii
import csv
import string
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...errors import DataError
from ..types import ImageDataset, Sample
from ..choices import POST_PROMPT, choice_dataset, choice_sample, choice_settings
from ._common import SINGLE_SPLIT, existing_file, register_format, wanted_splits
from ._table import _image_path, columns_error
from .csv_file import read_csv

ROTATION_OFFSET = 1_000_000
"""VLMEvalKit's circular TSVs hold each rotated copy of question i as row i + k * 1e6 (its g_index is i)."""
IMAGE_REFERENCE_CHARS = 64
"""An image cell of at most this many characters names another row's index instead of holding an image."""


@contextmanager
def _large_fields() -> Iterator[None]:
    """A base64 image cell is far above the csv module's default 128 KiB field limit; raised only while reading."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _cell(row: dict[str, str], column: str | None) -> str | None:
    """A cell's text; an empty cell (pandas' NaN when VLMEvalKit wrote the file) is None."""
    if column is None or column not in row:
        return None
    value = row[column].strip()
    return value or None


def _decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{where}: the image cell is not valid base64 ({exc}); VLMEvalKit TSVs hold base64-encoded "
                        "images, or another row's index") from None


@register_format("mmbench-tsv",
                 description="MMBench / VLMEvalKit multiple-choice TSV: index, question, hint, A..D, answer, base64 "
                             "image (or image_path), category; rows index+k*1e6 are rotations; options: "
                             "matcher=vlmevalkit|strict, circular, rank_by=letter|text, class_column, post_prompt",
                 source="local TSV file (VLMEvalKit's LMUData)")
def load_mmbench_tsv(
    path: str,
    *,
    class_column: str | None = None,
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
    """Columns as VLMEvalKit writes them: ``index`` (an integer id), ``question``, ``hint`` (may be empty), one
    column per option letter ``A``..``Z`` (an empty cell: no such option), ``answer`` (the letter), ``image`` (base64;
    a cell of at most 64 characters is the index of the row holding the image) or ``image_path`` (relative to the
    file, or to ``image_root``), and any others (``category``, ``l2-category``, ``split``...) kept in ``meta``.

    A circular TSV (MMBench) also holds each question's rotated copies as rows ``index + k * 1,000,000`` (or with a
    ``g_index`` column): they are kept with their question and asked when ``circular`` is true; otherwise only the
    questions themselves are (VLMEvalKit's "circ0"). ``class_column`` names a column holding the image's class, for
    the mischoice rate."""
    file = existing_file(path, "mmbench-tsv")
    settings = choice_settings(matcher, circular, rank_by, "mmbench-tsv")
    with _large_fields():
        header, rows = read_csv(file, "\t")
    where0 = f"{file}:1 (header)"
    for column in ("index", "question"):
        if column not in header:
            raise columns_error(where0, header, column, "a VLMEvalKit TSV column")
    if "answer" not in header:
        raise DataError(f"{where0}: no 'answer' column (columns: {', '.join(header)}). MMBench's test TSVs hide their "
                        "answers: evaluate a dev TSV, or add the answer letters")
    if "image" not in header and "image_path" not in header:
        raise DataError(f"{where0}: neither an 'image' (base64) nor an 'image_path' column; columns: "
                        f"{', '.join(header)}")
    for column in (class_column, split_column):
        if column is not None and column not in header:
            raise columns_error(where0, header, column, "class_column" if column == class_column else "split_column")
    letters = [c for c in string.ascii_uppercase if c in header]
    if len(letters) < 2:
        raise DataError(f"{where0}: option columns A, B, ... are missing (found {letters or 'none'})")
    base = file.parent if image_root is None else file.parent / Path(image_root).expanduser()

    index_of: dict[int, int] = {}  # row index -> line
    parsed: list[tuple[int, int, dict[str, str]]] = []  # (line, index, row)
    for lineno, row in rows:
        raw = _cell(row, "index")
        try:
            index = int(float(raw)) if raw is not None else None
        except ValueError:
            index = None
        if index is None or index < 0:
            raise DataError(f"{file}:{lineno}: index {row.get('index')!r} is not a non-negative integer")
        if index in index_of:
            raise DataError(f"{file}:{lineno}: index {index} was already used on line {index_of[index]}")
        index_of[index] = lineno
        parsed.append((lineno, index, row))
    by_index = {index: row for _, index, row in parsed}
    decoded: dict[int, bytes] = {}

    def image_of(lineno: int, index: int, row: dict[str, str], seen: tuple[int, ...] = ()) -> Any:
        where = f"{file}:{lineno}"
        cell = _cell(row, "image")
        if cell is None:
            path_cell = _cell(row, "image_path")
            if path_cell is None:
                raise DataError(f"{where}: row {index} has no image (empty 'image' and 'image_path' cells)")
            return _image_path(path_cell, base, where, "image_path")
        if len(cell) <= IMAGE_REFERENCE_CHARS:
            try:
                target = int(float(cell))
            except ValueError:
                raise DataError(f"{where}: image cell '{cell}' is neither base64 nor a row index") from None
            if target not in by_index or target in seen or target == index:
                raise DataError(f"{where}: image cell refers to row {target}, which holds no image of its own")
            return image_of(index_of[target], target, by_index[target], (*seen, index))
        if index not in decoded:
            decoded[index] = _decode(cell, where)
        return decoded[index]

    def options_answer(lineno: int, row: dict[str, str]) -> tuple[dict[str, str], str]:
        where = f"{file}:{lineno}"
        options = {c: text for c in letters if (text := _cell(row, c)) is not None}
        if len(options) < 2:
            raise DataError(f"{where}: {len(options)} option(s) filled in ({', '.join(options) or 'none'}); a "
                            "question needs two at least")
        answer = (_cell(row, "answer") or "").upper()
        if answer not in options:
            raise DataError(f"{where}: answer {row.get('answer')!r} is not one of the row's options "
                            f"({', '.join(options)})")
        return options, answer

    def group_of(index: int, row: dict[str, str]) -> int:
        g = _cell(row, "g_index")
        return int(float(g)) if g is not None else index % ROTATION_OFFSET

    rotations: dict[int, list[dict[str, Any]]] = {}
    for lineno, index, row in parsed:
        group = group_of(index, row)
        if group != index:
            if group not in by_index:
                raise DataError(f"{file}:{lineno}: row {index} is a rotation of question {group}, which is not in "
                                "the file")
            options, answer = options_answer(lineno, row)
            rotations.setdefault(group, []).append({"options": options, "answer": answer, "index": index})

    used = {"index", "question", "hint", "answer", "image", "image_path", "g_index", class_column, split_column,
            *letters}
    main = [(lineno, index, row) for lineno, index, row in parsed if group_of(index, row) == index]
    row_splits = [(_cell(row, split_column) or "") if split_column else split for _, _, row in main]
    for (lineno, _, _), s in zip(main, row_splits):
        if not s:
            raise DataError(f"{file}:{lineno}: column '{split_column}' (the split) is empty")
    chosen = wanted_splits(list(dict.fromkeys(row_splits)), splits, f"mmbench-tsv file {file}")
    out: dict[str, list[Sample]] = {s: [] for s in chosen}
    for (lineno, index, row), row_split in zip(main, row_splits):
        if row_split not in out:
            continue
        where = f"{file}:{lineno}"
        options, answer = options_answer(lineno, row)
        meta: dict[str, Any] = {k: v for k, v in row.items() if k not in used and v.strip()}
        meta["line"] = lineno
        if index in rotations:
            meta["rotations"] = sorted(rotations[index], key=lambda r: r["index"])
        out[row_split].append(choice_sample(
            str(index), image_of(lineno, index, row), _cell(row, "question") or "", options, answer,
            hint=_cell(row, "hint"), image_class=_cell(row, class_column), post_prompt=post_prompt, meta=meta,
            where=where))
    return choice_dataset(name or file.stem, out, settings, source=str(file),
                          description=f"VLMEvalKit multiple-choice TSV {file}")
