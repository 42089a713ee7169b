"""The fuzz target of guarantee 3: generated garbage into every loader and parser a run reads, for a fixed short
budget in CI (UNFORGET_FUZZ_EXAMPLES examples per target, 40 by default; set it to thousands to fuzz for longer).

Allowed outcomes: a result, or the documented error (DataError / BadSampleError for data, ConfigError for
configs, None for an unreadable judge reply). Anything else - an IndexError, a numpy error, a hang - is a failure.
The dataset formats' own byte-level fuzzing (IDX, CIFAR pickles, JSONL/CSV tables) is tests/unit/test_formats_fuzz.py.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unforget.config import load_config
from unforget.data.registry import parse_dataset_ref
from unforget.data.types import load_image
from unforget.errors import ConfigError, DataError, UnforgetError
from unforget.evaluation.config import EvalConfig
from unforget.evaluation.judges.llm import parse_retry_after, parse_yes_no
from unforget.evaluation.judges.validate import read_gold
from unforget.runs import iter_jsonl

EXAMPLES = int(os.environ.get("UNFORGET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"], "JPEG": ["L", "RGB", "CMYK", "YCbCr"],
           "TIFF": ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"], "GIF": ["L", "P"],
           "BMP": ["1", "L", "P", "RGB"], "WEBP": ["RGB", "RGBA"]}


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@st.composite
def encoded_images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    img = rgb.convert("L").point(lambda v: v * 200).convert("I") if mode in ("I;16", "I", "F") else rgb.convert(mode)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16))
    if mode == "F":
        img = img.convert("F")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue(), (w, h)


@FUZZ
@given(encoded_images(), st.data())
def test_images_in_any_mode_and_format_load_or_are_refused_cleanly(folder, image, data):
    raw, size = image
    assert load_image(raw, what="s").size == size  # intact: always an RGB image of its size
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)), max_size=4))
    mangled = bytearray(raw[:cut])
    for pos, byte in flips:
        if pos < len(mangled):
            mangled[pos] = byte
    path = folder / "image.bin"
    path.write_bytes(bytes(mangled))
    try:
        img = load_image(path, what="s")
    except DataError as exc:
        assert "sample" in str(exc) or "s:" in str(exc) or "s (" in str(exc)
    else:
        assert img.mode == "RGB"


def test_a_line_cut_inside_a_multibyte_character_is_dropped_as_truncated(folder):
    """Answers are written as UTF-8 (ensure_ascii=False): a power cut can split a character, not only a line."""
    path = folder / "cut.jsonl"
    whole = json.dumps({"id": "a", "answer": "rouge"}) + "\n"
    torn = json.dumps({"id": "b", "answer": "\u00e9t\u00e9"}, ensure_ascii=False).encode()
    path.write_bytes(whole.encode() + torn[: torn.index("\u00e9".encode()) + 1])
    assert [r["id"] for r in iter_jsonl(path)] == ["a"]


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=60), st.dictionaries(st.text(max_size=5), st.integers()).map(
    lambda d: json.dumps(d).encode())), max_size=8), st.booleans())
def test_samples_jsonl_yields_records_or_names_the_damaged_line(folder, lines, newline_at_end):
    path = folder / "samples.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end else b""))
    try:
        records = list(iter_jsonl(path))
    except DataError as exc:
        assert "line" in str(exc)
    else:
        assert all(isinstance(r, (dict, list, str, int, float, bool)) or r is None for r in records)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.sampled_from(["limit", "batch_size", "datasets", "mode", "judges", "model",
                                                  "nonsense", "max_new_tokens"]),
                                 st.one_of(st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3),
                                           st.none(), st.floats(allow_nan=True)), max_size=5).map(json.dumps)))
def test_config_files_load_or_raise_config_error(folder, text):
    path = folder / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(EvalConfig, path)
    except ConfigError:
        return
    assert isinstance(cfg, EvalConfig)


@FUZZ
@given(st.text(max_size=40))
def test_dataset_references_parse_or_raise_config_error(ref):
    try:
        parse_dataset_ref(ref)
    except UnforgetError:
        pass


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=80), st.fixed_dictionaries(
    {"dataset": st.sampled_from(["digits", "shapes", "nope"]), "answer": st.one_of(st.text(max_size=8), st.none()),
     "reference": st.one_of(st.text(max_size=8), st.integers()),
     "correct": st.one_of(st.booleans(), st.text(max_size=3))},
).map(lambda d: json.dumps(d).encode())), max_size=5))
def test_gold_verdict_files_read_or_raise_data_error(folder, lines):
    path = folder / "gold.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        read_gold(path)
    except UnforgetError:
        pass


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=30)), st.one_of(st.none(), st.text(max_size=30)))
def test_judge_replies_and_retry_after_headers_never_raise(reply, header):
    assert parse_yes_no(reply) in (True, False, None)
    value = parse_retry_after(header)
    assert value is None or (isinstance(value, float) and value >= 0)
