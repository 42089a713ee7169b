"""``csv``: CSV / TSV rows with a header line, the same columns and options as ``jsonl`` (e.g. miniImageNet's split
files)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Sequence

from ...errors import DataError
from ..types import ImageDataset
from ._common import SINGLE_SPLIT, existing_file, register_format
from ._table import Row, decode_text, table_dataset

def read_csv(path: str | Path, delimiter: str | None = None) -> tuple[list[str], list[Row]]:
    """(header, rows with the line number each row starts on). ``delimiter`` defaults to tab for .tsv, else comma."""
    file = Path(path)
    sep = delimiter or ("\t" if file.suffix.lower() == ".tsv" else ",")
    reader = csv.reader(io.StringIO(decode_text(file), newline=""), delimiter=sep)
    header: list[str] | None = None
    rows: list[Row] = []
    start = 1
    try:
        for fields in reader:
            lineno, start = start, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                dup = next((c for c, n in Counter(header).items() if n > 1), None)
                if dup is not None:
                    raise DataError(f"{file}:{lineno}: column '{dup}' appears twice in the header")
                continue
            if len(fields) != len(header):
                raise DataError(f"{file}:{lineno}: row has {len(fields)} fields but the header has {len(header)} "
                                f"({', '.join(header)}); quote fields that contain '{sep}'")
            rows.append((lineno, dict(zip(header, fields))))
    except csv.Error as exc:
        raise DataError(f"{file}:{reader.line_num}: malformed CSV ({exc}); fix or remove this line") from None
    if header is None:
        raise DataError(f"{file}: empty; expected a header line with column names")
    return header, rows


@register_format("csv",
                 description="CSV/TSV rows of image path + question + answer (or label); paths relative to the file",
                 source="local CSV file")
def load_csv(
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
    delimiter: str | None = None,
    split: str = SINGLE_SPLIT,
    splits: Sequence[str] | str | None = None,
    templates: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """A CSV file with a header line (tab-separated for .tsv); same columns and options as ``jsonl``, e.g. the
    miniImageNet split files: ``csv:mini/test.csv`` with image_column="filename", label_column="label",
    image_root="images"."""
    file = existing_file(path, "csv")
    header, rows = read_csv(file, delimiter)
    return table_dataset(
        file, header, rows, fmt="csv", image_column=image_column, question_column=question_column,
        answer_column=answer_column, label_column=label_column, split_column=split_column, id_column=id_column,
        class_names=class_names, image_root=image_root, split=split, splits=splits, templates=templates,
        name=name,
    )
