"""Property tests: corrupt or random input to the format parsers raises DataError / BadSampleError, nothing else."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unforget.data.formats.cifar import read_cifar_pickle
from unforget.data.formats.csv_file import load_csv, read_csv
from unforget.data.formats.jsonl import load_jsonl, read_jsonl
from unforget.data.formats.mnist_idx import read_idx
from unforget.data.types import load_image
from unforget.errors import DataError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx_bytes() -> bytes:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return b"\x00\x00\x08\x03" + struct.pack(">3I", *arr.shape) + arr.tobytes()


VALID_IDX = _idx_bytes()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {"png": _png_bytes(), "jpeg": _jpeg_bytes()}
VALID_PICKLE = pickle.dumps({b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.new("RGB", (2, 2)).save(root / "a.png")
        yield root


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: cut % (len(data) + 1)])
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


mutations = st.tuples(st.integers(0, 10_000), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                        max_size=4))


# ----------------------------------------------------------------------------------------------------- IDX


@FUZZ
@given(data=st.binary(max_size=64))
def test_idx_random_bytes(folder, data):
    f = _write(folder, "r-idx3-ubyte", data)
    try:
        arr = read_idx(f)
    except DataError:
        return
    if not data.startswith(b"\x1f\x8b"):
        assert arr.size * arr.itemsize == len(data) - 4 - 4 * data[3]


@FUZZ
@given(mutation=mutations, gz=st.booleans())
def test_idx_truncated_or_corrupted(folder, mutation, gz):
    data = _mutate(gzip.compress(VALID_IDX) if gz else VALID_IDX, *mutation)
    f = _write(folder, "m-idx3-ubyte", data)
    try:
        read_idx(f)
    except DataError:
        pass


def test_idx_every_truncation_is_refused(folder):
    for cut in range(len(VALID_IDX)):
        with pytest.raises(DataError):
            read_idx(_write(folder, "t-idx3-ubyte", VALID_IDX[:cut]))


# ---------------------------------------------------------------------------------------------- JSONL / CSV

row_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8), st.just("a.png"),
                       st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                                   max_size=1))
rows = st.lists(st.dictionaries(st.sampled_from(["image", "question", "answer", "label", "split", "id"]),
                                row_values, max_size=6), max_size=4)


@FUZZ
@given(data=st.binary(max_size=200))
def test_jsonl_random_bytes(folder, data):
    f = _write(folder, "r.jsonl", data)
    try:
        read_jsonl(f)
    except DataError:
        pass


@FUZZ
@given(records=rows, label=st.sampled_from([None, "label"]), split=st.sampled_from([None, "split"]),
       ident=st.sampled_from([None, "id"]), class_names=st.sampled_from([None, ["x", "y"]]))
def test_jsonl_random_rows(folder, records, label, split, ident, class_names):
    f = _write(folder, "rows.jsonl", "\n".join(json.dumps(r) for r in records).encode())
    try:
        load_jsonl(str(f), label_column=label, split_column=split, id_column=ident, class_names=class_names)
    except DataError:  # BadSampleError is a DataError
        pass


@FUZZ
@given(data=st.binary(max_size=200), delimiter=st.sampled_from([None, ",", ";", "\t"]))
def test_csv_random_bytes(folder, data, delimiter):
    f = _write(folder, "r.csv", data)
    try:
        read_csv(f, delimiter)
    except DataError:
        pass


@FUZZ
@given(cells=st.lists(st.lists(st.sampled_from(["image", "question", "answer", "label", "a.png", "", "x", '"',
                                                  ",", "\n", "1", "-1"]), max_size=4), max_size=5),
       label=st.sampled_from([None, "label"]))
def test_csv_random_tables(folder, cells, label):
    f = _write(folder, "t.csv", "\n".join(",".join(row) for row in cells).encode())
    try:
        load_csv(str(f), label_column=label)
    except DataError:
        pass


# ------------------------------------------------------------------------------------------------ images


@FUZZ
@given(kind=st.sampled_from(sorted(IMAGES)), mutation=mutations, as_file=st.booleans())
def test_load_image_truncated_or_corrupted(folder, kind, mutation, as_file):
    data = _mutate(IMAGES[kind], *mutation)
    source = _write(folder, f"img.{kind}", data) if as_file else data
    try:
        img = load_image(source, what="fuzz")
    except DataError:
        return
    assert img.mode == "RGB"


@FUZZ
@given(data=st.binary(max_size=128))
def test_load_image_random_bytes(data):
    try:
        load_image(data, what="fuzz")
    except DataError:
        pass


# ------------------------------------------------------------------------------------------- CIFAR pickle


@FUZZ
@given(data=st.binary(max_size=128))
def test_cifar_pickle_random_bytes(folder, data):
    try:
        read_cifar_pickle(_write(folder, "batch", b"\x80\x02" + data))
    except DataError:
        pass


@FUZZ
@given(mutation=mutations)
def test_cifar_pickle_truncated_or_corrupted(folder, mutation):
    try:
        read_cifar_pickle(_write(folder, "batch", _mutate(VALID_PICKLE, *mutation)))
    except DataError:
        pass
