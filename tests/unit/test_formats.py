"""On-disk dataset formats, each fed tiny files written in exactly that format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pickle
import struct
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unforget.data import FORMATS, load_dataset
from unforget.data.formats.cifar import read_cifar_pickle
from unforget.data.formats.csv_file import read_csv
from unforget.data.formats.jsonl import read_jsonl
from unforget.data.formats.mnist_idx import read_idx
from unforget.errors import BadSampleError, ConfigError, DataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# ------------------------------------------------------------------------------------------------ writers


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """IDX: two zero bytes, type byte (0x08 = ubyte), ndim, big-endian uint32 sizes, raw data."""
    data = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


class Py2Pickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """Writes what Python 2's cPickle wrote for the official CIFAR files: protocol 2, every string as a
    byte string (SHORT_BINSTRING/BINSTRING), numpy's reconstructor under numpy.core.multiarray."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj, name=None):  # noqa: ANN001
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[types.FunctionType] = save_global
    dispatch[type] = save_global


def py2_pickle(path: Path, obj: object) -> Path:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())
    return path


def cifar_rows(colors: list[tuple[int, int, int]]) -> np.ndarray:
    """N x 3072 uint8 rows in CIFAR order (1024 R, 1024 G, 1024 B), each image one solid colour, with
    pixel (0, 1) set to (1, 2, 3) to pin the channel/row layout."""
    rows = np.zeros((len(colors), 3, 32, 32), np.uint8)
    for i, c in enumerate(colors):
        rows[i] = np.array(c, np.uint8)[:, None, None]
        rows[i, :, 0, 1] = (1, 2, 3)
    return rows.reshape(len(colors), 3072)


def write_png(path: Path, color: tuple[int, int, int], size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def pixel(sample, dataset: str = "") -> tuple[int, ...]:  # noqa: ANN001
    return tuple(np.asarray(sample.load_image(dataset))[0, 0].tolist())


# ---------------------------------------------------------------------------------------------- registry


def test_every_format_is_registered_with_source_and_description():
    names = set(FORMATS.names())
    assert {"mnist-idx", "cifar10", "cifar100", "imagefolder", "jsonl", "csv", "hf"} <= names
    for entry in FORMATS.entries():
        assert entry.description and entry.meta.get("source"), entry.name


def test_unknown_option_is_a_config_error_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="no option 'clas_names'.*Did you mean 'class_names'"):
        load_dataset(f"mnist-idx:{tmp_path}", clas_names=["a"])


# ------------------------------------------------------------------------------------------------- mnist-idx


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    train = np.stack([np.full((5, 4), v, np.uint8) for v in (0, 100, 200)])
    write_idx(tmp_path / "train-images-idx3-ubyte", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 1, 9], np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.stack([np.full((5, 4), 50, np.uint8)] * 2), gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 7], np.uint8), gz=True)
    return tmp_path


def test_mnist_idx_reads_plain_and_gzip_files(mnist_dir):
    ds = load_dataset(f"mnist-idx:{mnist_dir}")
    assert ds.task == "classification"
    assert ds.class_names == [str(d) for d in range(10)]
    assert [s.label for s in ds.split("train")] == [3, 1, 9]
    assert [s.label for s in ds.split("test")] == [0, 7]
    assert [s.id for s in ds.split("test")] == ["test/0", "test/1"]
    image = ds.split("train")[1].load_image()
    assert image.size == (4, 5) and image.mode == "RGB"  # width 4, height 5
    assert pixel(ds.split("train")[2]) == (200, 200, 200)
    assert ds.reference(ds.split("test")[1]) == "7"
    assert "{classes}" in ds.templates[0]


def test_read_idx_parses_header_and_shape(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "x-idx3-ubyte", arr))
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_mnist_class_names_option_and_torchvision_raw_folder(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([0, 1], np.uint8))
    ds = load_dataset(f"mnist-idx:{tmp_path}", class_names=["T-shirt/top", "Trouser"])
    assert list(ds.splits) == ["test"]
    assert [ds.reference(s) for s in ds.split("test")] == ["T-shirt/top", "Trouser"]


def test_truncated_idx_file_names_the_file(mnist_dir):
    f = mnist_dir / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated"):
        load_dataset(f"mnist-idx:{mnist_dir}")


def test_truncated_idx_header(tmp_path):
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"\x00\x00\x08\x01\x00\x00")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(f)


def test_idx_with_wrong_magic(tmp_path):
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(f)


def test_gzipped_idx_with_more_data_than_declared_is_refused(tmp_path):
    header = b"\x00\x00\x08\x01" + struct.pack(">I", 3)
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(header + bytes(8 << 20)))  # 8 MiB after a header declaring 3 bytes
    with pytest.raises(DataError, match="declares shape \\(3,\\).*longer than its header says"):
        read_idx(f)
    f.write_bytes(gzip.compress(header + b"\x01\x02\x03")[:-9])  # cut inside the gzip trailer/stream
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        read_idx(f)


def test_idx_count_mismatch_names_both_counts(mnist_dir):
    write_idx(mnist_dir / "train-labels-idx1-ubyte", np.array([3, 1], np.uint8))
    with pytest.raises(DataError, match=r"3 images but train-labels-idx1-ubyte holds 2 labels"):
        load_dataset(f"mnist-idx:{mnist_dir}")


def test_idx_label_outside_class_list(mnist_dir):
    write_idx(mnist_dir / "train-labels-idx1-ubyte", np.array([3, 1, 12], np.uint8))
    with pytest.raises(BadSampleError, match=r"train-labels-idx1-ubyte index 2: label 12 is outside"):
        load_dataset(f"mnist-idx:{mnist_dir}")


def test_mnist_missing_labels_file(mnist_dir):
    (mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no test labels file"):
        load_dataset(f"mnist-idx:{mnist_dir}")
    assert list(load_dataset(f"mnist-idx:{mnist_dir}", splits=["train"]).splits) == ["train"]


def test_mnist_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files"):
        load_dataset(f"mnist-idx:{tmp_path}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"mnist-idx:{tmp_path / 'nope'}")


# ------------------------------------------------------------------------------------------ cifar10 / cifar100

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    py2_pickle(root / "batches.meta", {b"num_cases_per_batch": 2, b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    for b in range(1, 6):
        py2_pickle(root / f"data_batch_{b}", {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": [b, b + 1],
            b"data": cifar_rows([(10 * b, 0, 0), (0, 10 * b, 0)]),
            b"filenames": [f"img_{b}_0.png".encode(), f"img_{b}_1.png".encode()],
        })
    py2_pickle(root / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [9],
                                     b"data": cifar_rows([(7, 8, 9)]), b"filenames": [b"t.png"]})
    return root


def test_cifar10_reads_python2_style_batches(cifar10_dir):
    ds = load_dataset(f"cifar10:{cifar10_dir}")
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"] and len(ds.class_names) == 10
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 10 and len(test) == 1
    assert [s.label for s in train[:4]] == [1, 2, 2, 3]
    assert train[2].id == "train/2" and train[2].meta["filename"] == "img_2_0.png"
    image = np.asarray(test[0].load_image())
    assert image.shape == (32, 32, 3)
    assert tuple(image[0, 0]) == (7, 8, 9) and tuple(image[0, 1]) == (1, 2, 3)  # row 0, column 1
    assert tuple(np.asarray(train[3].load_image())[5, 5]) == (0, 20, 0)
    assert ds.reference(test[0]) == "truck"


def test_cifar10_accepts_the_parent_folder_and_split_choice(cifar10_dir):
    ds = load_dataset(f"cifar10:{cifar10_dir.parent}", splits=["test"])
    assert list(ds.splits) == ["test"]


def test_cifar10_missing_train_batch_is_named(cifar10_dir):
    (cifar10_dir / "data_batch_3").unlink()
    with pytest.raises(DataError, match="needs data_batch_3"):
        load_dataset(f"cifar10:{cifar10_dir}")


def test_cifar_label_outside_class_list(cifar10_dir):
    py2_pickle(cifar10_dir / "test_batch", {b"labels": [10], b"data": cifar_rows([(0, 0, 0)])})
    with pytest.raises(BadSampleError, match=r"test_batch index 0: label 10 is outside"):
        load_dataset(f"cifar10:{cifar10_dir}")


def test_cifar_truncated_pickle(cifar10_dir):
    f = cifar10_dir / "test_batch"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR pickle.*truncated"):
        load_dataset(f"cifar10:{cifar10_dir}")


def test_cifar_wrong_data_shape(cifar10_dir):
    py2_pickle(cifar10_dir / "test_batch", {b"labels": [1], b"data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(DataError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        load_dataset(f"cifar10:{cifar10_dir}")


class _RunsCode:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_pickle_with_forbidden_global_is_refused_without_running_it(tmp_path, protocol):
    target = tmp_path / "created-by-pickle"
    evil = tmp_path / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": _RunsCode(target), b"labels": [0]}, protocol=protocol))
    with pytest.raises(DataError, match=r"refusing to unpickle '(posix|nt)\.mkdir'"):
        read_cifar_pickle(evil)
    assert not target.exists()


def test_cifar_pickle_written_by_python3_is_read(tmp_path):
    # Re-pickled copies (protocol 2 bytes via _codecs.encode, protocol 5 arrays via _frombuffer) still load.
    for protocol in (2, 5):
        f = tmp_path / f"batch{protocol}"
        f.write_bytes(pickle.dumps({b"labels": [1], b"data": cifar_rows([(1, 2, 3)])}, protocol=protocol))
        batch = read_cifar_pickle(f)
        assert batch["labels"] == [1] and batch["data"].shape == (1, 3072)


def test_cifar_pickle_codecs_encode_only_latin1(tmp_path):
    f = tmp_path / "batch"
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    f.write_bytes(payload)
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        read_cifar_pickle(f)


def _dtype_pickle(dtype_state: bytes) -> bytes:
    """A protocol-2 pickle of a 1-element uint8 array whose dtype state tuple is ``dtype_state`` (opcodes)."""
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            b"(K\x01K\x01\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R" + dtype_state
            + b"\x89U\x01\x07tb.")


def test_cifar_pickle_array_state_is_checked_before_numpy_sees_it(tmp_path):
    f = tmp_path / "batch"
    f.write_bytes(_dtype_pickle(b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"))
    with pytest.raises(DataError, match="expected a pickled dict .*found ndarray"):  # well-formed array
        read_cifar_pickle(f)
    # numpy 2.4 segfaults on this 6-item dtype state; the stand-in refuses it instead.
    f.write_bytes(_dtype_pickle(b"(K\x03U\x01|NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"))
    with pytest.raises(DataError, match="malformed dtype state"):
        read_cifar_pickle(f)


def test_cifar_pickle_huge_declared_length_is_refused_without_allocating(tmp_path):
    f = tmp_path / "batch"
    f.write_bytes(b"\x80\x02}X\x00\x00\x00\xf0labels")  # BINUNICODE claiming 4 GB
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        read_cifar_pickle(f)


def test_cifar_pickle_cannot_set_state_on_an_allowed_global(tmp_path):
    f = tmp_path / "batch"
    f.write_bytes(b"\x80\x02cnumpy\ndtype\n}}(U\x01xK\x01u\x86b.")  # BUILD ({}, {"x": 1}) on numpy.dtype
    with pytest.raises(DataError, match="refusing to set state on a global"):
        read_cifar_pickle(f)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    py2_pickle(root / "meta", {b"fine_label_names": [b"apple", b"aquarium_fish", b"baby"],
                               b"coarse_label_names": [b"fruit_and_vegetables", b"fish", b"people"]})
    for split, fine, coarse in (("train", [0, 2], [0, 2]), ("test", [1], [1])):
        py2_pickle(root / split, {b"filenames": [b"x.png"] * len(fine), b"fine_labels": fine,
                                  b"coarse_labels": coarse, b"data": cifar_rows([(5, 5, 5)] * len(fine))})
    fine = load_dataset(f"cifar100:{tmp_path}")
    assert fine.class_names == ["apple", "aquarium_fish", "baby"]
    assert [fine.reference(s) for s in fine.split("train")] == ["apple", "baby"]
    coarse = load_dataset(f"cifar100:{root}", coarse=True)
    assert [coarse.reference(s) for s in coarse.split("test")] == ["fish"]


def test_cifar_folder_without_meta(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"no 'batches.meta'.*tar xzf cifar-10-python.tar.gz"):
        load_dataset(f"cifar10:{tmp_path}")


# ------------------------------------------------------------------------------------------------ imagefolder


def test_imagefolder_with_split_folders_and_wnid_names(tmp_path):
    write_png(tmp_path / "train" / "n01532829" / "a.JPEG", (255, 0, 0))
    write_png(tmp_path / "train" / "n01532829" / "b.png", (250, 0, 0))
    write_png(tmp_path / "train" / "n02110063" / "c.jpg", (0, 255, 0))
    write_png(tmp_path / "val" / "n02110063" / "d.png", (0, 0, 255))
    write_png(tmp_path / "val" / "n09999999" / "e.png", (9, 9, 9))
    (tmp_path / "train" / "n01532829" / "notes.txt").write_text("not an image")
    (tmp_path / "classes.txt").write_text("n01532829 house finch, linnet\nn02110063\tmalamute\nn00000001 unused\n")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.class_names == ["house finch", "malamute", "n09999999"]  # unmapped folder keeps its name
    assert ds.synonyms == {"house finch": ["linnet"]}
    assert sorted(ds.splits) == ["train", "val"]
    assert [(s.id, s.label) for s in ds.split("train")] == [
        ("train/n01532829/a.JPEG", 0), ("train/n01532829/b.png", 0), ("train/n02110063/c.jpg", 1)]
    assert [s.label for s in ds.split("val")] == [1, 2]
    assert pixel(ds.split("val")[0]) == (0, 0, 255)


def test_imagefolder_class_names_json_and_duplicate_names(tmp_path):
    write_png(tmp_path / "n02012849" / "a.png", (1, 1, 1))
    write_png(tmp_path / "n03126707" / "b.png", (2, 2, 2))
    (tmp_path / "class_names.json").write_text(json.dumps({"n02012849": "crane", "n03126707": ["crane", "derrick"]}))
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert list(ds.splits) == ["test"]
    assert ds.class_names == ["crane (n02012849)", "crane (n03126707)"]
    assert ds.synonyms == {"crane (n03126707)": ["derrick"]}


def test_imagefolder_train_fraction_is_stratified_and_deterministic(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(10):
            write_png(tmp_path / cls / f"{i}.png", (i, i, i))
    a = load_dataset(f"imagefolder:{tmp_path}", train_fraction=0.7, seed=1)
    b = load_dataset(f"imagefolder:{tmp_path}", train_fraction=0.7, seed=1)
    c = load_dataset(f"imagefolder:{tmp_path}", train_fraction=0.7, seed=2)
    ids = lambda ds, split: [s.id for s in ds.split(split)]  # noqa: E731
    assert ids(a, "train") == ids(b, "train") and ids(a, "test") == ids(b, "test")
    assert ids(a, "train") != ids(c, "train")
    assert len(ids(a, "train")) == 14 and len(ids(a, "test")) == 6
    assert not set(ids(a, "train")) & set(ids(a, "test"))
    assert sum(s.label == 0 for s in a.split("train")) == 7  # 7 of each class


def test_imagefolder_class_list_option_and_errors(tmp_path):
    write_png(tmp_path / "a" / "1.png", (1, 1, 1))
    write_png(tmp_path / "b" / "2.png", (2, 2, 2))
    assert load_dataset(f"imagefolder:{tmp_path}", class_names=["apple", "banana"]).class_names == ["apple", "banana"]
    with pytest.raises(ConfigError, match="class_names has 1 names but .* has 2 class folders"):
        load_dataset(f"imagefolder:{tmp_path}", class_names=["apple"])
    with pytest.raises(ConfigError, match="train_fraction must lie strictly between 0 and 1"):
        load_dataset(f"imagefolder:{tmp_path}", train_fraction=1.5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"imagefolder:{empty}")


def test_imagefolder_corrupt_image_fails_lazily_naming_the_file(tmp_path):
    write_png(tmp_path / "a" / "good.png", (1, 1, 1))
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    write_png(tmp_path / "b" / "cut.png", (2, 2, 2), size=64)
    cut = tmp_path / "b" / "cut.png"
    cut.write_bytes(cut.read_bytes()[:60])
    ds = load_dataset(f"imagefolder:{tmp_path}")
    by_id = {s.id: s for s in ds.split("test")}
    with pytest.raises(BadSampleError, match="empty.png is empty"):
        by_id["a/empty.png"].load_image()
    with pytest.raises(BadSampleError, match="cut.png"):
        by_id["b/cut.png"].load_image()
    assert pixel(by_id["a/good.png"]) == (1, 1, 1)


# ---------------------------------------------------------------------------------------------- jsonl and csv


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_png(tmp_path / "imgs" / "red.png", (255, 0, 0))
    write_png(tmp_path / "imgs" / "blue.png", (0, 0, 255))
    return tmp_path


def test_jsonl_vqa_rows_with_relative_paths(images):
    f = write_jsonl(images / "vqa.jsonl", [
        {"image": "imgs/red.png", "question": "What colour?", "answer": "red", "source": "hand"},
        "",
        {"image": str(images / "imgs" / "blue.png"), "question": "And this?", "answer": ["blue", "navy", "blue"]},
    ])
    ds = load_dataset(f"jsonl:{f}")
    assert ds.task == "vqa" and list(ds.splits) == ["test"]
    first, second = ds.split("test")
    assert (first.id, first.question, first.answer) == ("line-1", "What colour?", "red")
    assert first.meta == {"source": "hand", "line": 1}
    assert pixel(first) == (255, 0, 0)
    assert second.id == "line-3" and second.answer == "blue" and second.meta["answers"] == ["blue", "navy", "blue"]
    assert ds.question_for(second) == "And this?"


def test_jsonl_custom_columns_split_and_id(images):
    f = write_jsonl(images / "d.jsonl", [
        {"img": "imgs/red.png", "q": "colour?", "a": "red", "part": "train", "uid": "r1"},
        {"img": "imgs/blue.png", "q": "colour?", "a": "blue", "part": "val", "uid": "b1"},
    ])
    opts = dict(image_column="img", question_column="q", answer_column="a", split_column="part", id_column="uid")
    ds = load_dataset(f"jsonl:{f}", **opts)
    assert {k: [s.id for s in v] for k, v in ds.splits.items()} == {"train": ["r1"], "val": ["b1"]}
    assert list(load_dataset(f"jsonl:{f}", splits="val", **opts).splits) == ["val"]


def test_jsonl_classification_sorted_labels_and_class_names(images):
    rows = [{"image": "imgs/red.png", "label": "red"}, {"image": "imgs/blue.png", "label": "blue"}]
    f = write_jsonl(images / "cls.jsonl", rows)
    ds = load_dataset(f"jsonl:{f}", label_column="label")
    assert ds.task == "classification" and ds.class_names == ["blue", "red"]
    assert [s.label for s in ds.split("test")] == [1, 0]
    assert ds.question_for(ds.split("test")[0]).endswith("blue, red.")
    ds = load_dataset(f"jsonl:{f}", label_column="label", class_names=["red", "green", "blue"])
    assert [s.label for s in ds.split("test")] == [0, 2]


def test_jsonl_integer_labels_are_indices(images):
    f = write_jsonl(images / "cls.jsonl", [{"image": "imgs/red.png", "label": 2},
                                           {"image": "imgs/red.png", "label": 0}])
    ds = load_dataset(f"jsonl:{f}", label_column="label", class_names=["2", "1", "0"])
    assert [s.label for s in ds.split("test")] == [2, 0]  # ints index the list even when names look like digits
    assert load_dataset(f"jsonl:{f}", label_column="label").class_names == ["0", "1", "2"]


def test_jsonl_label_outside_class_list_names_the_line(images):
    f = write_jsonl(images / "cls.jsonl", [{"image": "imgs/red.png", "label": 0},
                                           {"image": "imgs/red.png", "label": 5}])
    with pytest.raises(BadSampleError, match=r"cls.jsonl:2 \(column 'label'\): label 5 is outside the class list"):
        load_dataset(f"jsonl:{f}", label_column="label", class_names=["a", "b"])
    g = write_jsonl(images / "named.jsonl", [{"image": "imgs/red.png", "label": "purple"}])
    with pytest.raises(BadSampleError, match=r"named.jsonl:1 .*label 'purple' is not a class name \(a, b\)"):
        load_dataset(f"jsonl:{g}", label_column="label", class_names=["a", "b"])


def test_jsonl_malformed_line_names_its_number(images):
    f = write_jsonl(images / "bad.jsonl", [
        {"image": "imgs/red.png", "question": "q", "answer": "a"},
        "",
        '{"image": "imgs/red.png", "question": "q" "answer": "a"}',
    ])
    with pytest.raises(DataError, match=r"bad.jsonl:3: not valid JSON"):
        load_dataset(f"jsonl:{f}")
    write_jsonl(f, ['["a", "list"]'])
    with pytest.raises(DataError, match=r"bad.jsonl:1: expected a JSON object per line"):
        read_jsonl(f)


def test_jsonl_missing_column_lists_columns_found(images):
    f = write_jsonl(images / "m.jsonl", [{"image": "imgs/red.png", "label": "x", "text": "t"}])
    with pytest.raises(DataError, match=r"m.jsonl:1: no column 'question'.*Columns found: image, label, text.*"
                                        r"label_column='label'"):
        load_dataset(f"jsonl:{f}")


def test_jsonl_missing_image_and_url_and_duplicate_id(images):
    f = write_jsonl(images / "x.jsonl", [{"image": "imgs/red.png", "question": "q", "answer": "a"},
                                         {"image": "imgs/gone.png", "question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"x.jsonl:2: image file .*gone.png does not exist"):
        load_dataset(f"jsonl:{f}")
    write_jsonl(f, [{"image": "https://example.com/a.png", "question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="is a URL; unforget never downloads"):
        load_dataset(f"jsonl:{f}")
    write_jsonl(f, [{"image": "imgs/red.png", "question": "q", "answer": "a", "id": 7},
                    {"image": "imgs/red.png", "question": "q", "answer": "a", "id": 7}])
    with pytest.raises(DataError, match=r"x.jsonl:2: sample id '7' was already used on line 1"):
        load_dataset(f"jsonl:{f}", id_column="id")


def test_jsonl_not_utf8_names_the_line(images):
    f = images / "latin.jsonl"
    f.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:2: not UTF-8"):
        read_jsonl(f)


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


def test_csv_vqa_and_tsv(images):
    f = write_csv(images / "v.csv", [["image", "question", "answer"], ["imgs/red.png", "What, colour?", "red"],
                                     ["imgs/blue.png", "Multi\nline?", "blue"]])
    ds = load_dataset(f"csv:{f}")
    assert [(s.id, s.question, s.answer) for s in ds.split("test")] == [
        ("line-2", "What, colour?", "red"), ("line-3", "Multi\nline?", "blue")]
    t = write_csv(images / "v.tsv", [["image", "question", "answer"], ["imgs/red.png", "q", "a"]], "\t")
    assert load_dataset(f"csv:{t}").split("test")[0].answer == "a"


def test_csv_classification_with_string_labels(images):
    f = write_csv(images / "c.csv", [["path", "class", "fold"], ["imgs/red.png", "red", "train"],
                                     ["imgs/blue.png", "blue", "test"], ["imgs/blue.png", "2", "test"]])
    ds = load_dataset(f"csv:{f}", image_column="path", label_column="class", split_column="fold",
                      class_names=["red", "blue", "green"])
    assert [s.label for s in ds.split("train")] == [0]
    assert [s.label for s in ds.split("test")] == [1, 2]  # "2" names no class: read as an index


def test_csv_header_missing_column_and_ragged_row(images):
    f = write_csv(images / "h.csv", [["image", "prompt", "answer"], ["imgs/red.png", "q", "a"]])
    with pytest.raises(DataError, match=r"h.csv:1 \(header\): no column 'question'.*Columns found: image, prompt, "
                                        r"answer. Set question_column="):
        load_dataset(f"csv:{f}")
    g = write_csv(images / "r.csv", [["image", "question", "answer"], ["imgs/red.png", "q", "a"],
                                     ["imgs/red.png", "q", "a", "extra"]])
    with pytest.raises(DataError, match=r"r.csv:3: row has 4 fields but the header has 3"):
        load_dataset(f"csv:{g}")


def test_csv_minimagenet_split_file_with_image_root(tmp_path):
    write_png(tmp_path / "images" / "n0153282900000005.jpg", (3, 3, 3))
    write_png(tmp_path / "images" / "n0211006300000001.jpg", (4, 4, 4))
    f = write_csv(tmp_path / "test.csv", [["filename", "label"], ["n0153282900000005.jpg", "n01532829"],
                                         ["n0211006300000001.jpg", "n02110063"]])
    ds = load_dataset(f"csv:{f}", image_column="filename", label_column="label", image_root="images")
    assert ds.class_names == ["n01532829", "n02110063"]
    assert pixel(ds.split("test")[1]) == (4, 4, 4)
    with pytest.raises(DataError, match=r"test.csv:2: image file .*n0153282900000005.jpg does not exist"):
        load_dataset(f"csv:{f}", image_column="filename", label_column="label")


def test_vqa_row_needs_a_question_and_an_answer(images):
    f = write_jsonl(images / "q.jsonl", [{"image": "imgs/red.png", "question": " ", "answer": "red"}])
    with pytest.raises(DataError, match=r"q.jsonl:1 \(column 'question'\): the question is empty"):
        load_dataset(f"jsonl:{f}")
    write_jsonl(f, [{"image": "imgs/red.png", "question": "q?", "answer": None}])
    with pytest.raises(DataError, match=r"q.jsonl:1 \(column 'answer'\): the answer is None"):
        load_dataset(f"jsonl:{f}")


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(images):
    f = images / "sep.jsonl"
    f.write_text('{"image": "imgs/red.png", "question": "a\u2028b", "answer": "c"}\n', encoding="utf-8")
    assert "\u2028" in f.read_text(encoding="utf-8")  # the raw character, which JSON allows in strings
    assert [row["question"] for _, row in read_jsonl(f)] == ["a\u2028b"]


def test_csv_empty_file(tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("")
    with pytest.raises(DataError, match="empty; expected a header"):
        read_csv(f)


# ---------------------------------------------------------------------------------------------------------- hf


def _hf_classification(n_per_class: int = 1):
    import datasets

    colors = {"cat": (200, 10, 10), "dog": (10, 200, 10)}
    rows = [(Image.new("RGB", (6, 6), c), k) for k, c in colors.items() for _ in range(n_per_class)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    return datasets.Dataset.from_dict({"image": [r[0] for r in rows], "label": [1 if r[1] == "dog" else 0
                                                                                for r in rows]}, features=features)


def test_hf_save_to_disk_dataset_dict_with_class_label(tmp_path):
    import datasets

    ds_train = _hf_classification(2)
    datasets.DatasetDict({"train": ds_train, "validation": _hf_classification(1)}).save_to_disk(tmp_path / "dd")
    ds = load_dataset(f"hf:{tmp_path / 'dd'}")
    assert ds.task == "classification" and ds.class_names == ["cat", "dog"]
    assert sorted(ds.splits) == ["train", "validation"]
    assert [s.label for s in ds.split("train")] == [0, 0, 1, 1]
    assert isinstance(ds.split("train")[0].image, bytes)
    assert pixel(ds.split("train")[3]) == (10, 200, 10)
    assert list(load_dataset(f"hf:{tmp_path / 'dd'}", splits=["validation"]).splits) == ["validation"]


def test_hf_single_dataset_and_parquet_folder(tmp_path):
    single = _hf_classification()
    single.save_to_disk(tmp_path / "one")
    ds = load_dataset(f"hf:{tmp_path / 'one'}")
    assert list(ds.splits) == ["test"] and [s.label for s in ds.split("test")] == [0, 1]

    single.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    single.to_parquet(str(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet"))
    ds = load_dataset(f"hf:{tmp_path / 'pq'}")
    assert sorted(ds.splits) == ["test", "train"] and ds.class_names == ["cat", "dog"]
    assert pixel(ds.split("train")[0]) == (200, 10, 10)


def test_hf_vqa_columns_and_missing_columns(tmp_path):
    import datasets

    img = Image.new("RGB", (4, 4), (1, 2, 3))
    vqa = datasets.Dataset.from_dict({"picture": [img], "q": ["What colour?"], "a": ["grey"]},
                                     features=datasets.Features({"picture": datasets.Image(),
                                                                 "q": datasets.Value("string"),
                                                                 "a": datasets.Value("string")}))
    vqa.save_to_disk(tmp_path / "vqa")
    ds = load_dataset(f"hf:{tmp_path / 'vqa'}", question_column="q", answer_column="a")
    sample = ds.split("test")[0]
    assert ds.task == "vqa" and (sample.question, sample.answer) == ("What colour?", "grey")
    assert pixel(sample) == (1, 2, 3)
    with pytest.raises(DataError, match=r"no label column \(ClassLabel\) and no 'question' column; columns: "
                                        r"picture \(Image\), q \(Value\), a \(Value\)"):
        load_dataset(f"hf:{tmp_path / 'vqa'}")


def test_hf_imagefolder_builder_from_disk(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", (5, 5, 5))
    write_png(tmp_path / "train" / "dog" / "b.png", (6, 6, 6))
    write_png(tmp_path / "test" / "dog" / "c.png", (7, 7, 7))
    ds = load_dataset(f"hf:{tmp_path}")
    assert ds.class_names == ["cat", "dog"] and sorted(ds.splits) == ["test", "train"]
    assert [s.label for s in ds.split("test")] == [1]
    assert ds.split("test")[0].image == str(tmp_path / "test" / "dog" / "c.png")


def test_hf_label_minus_one_is_outside_the_class_list(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (2, 2))] * 2, "label": [0, -1]},
                               features=features).save_to_disk(tmp_path / "neg")
    with pytest.raises(BadSampleError, match=r"split 'test' row 1 \(column 'label'\): label -1 is outside"):
        load_dataset(f"hf:{tmp_path / 'neg'}")


def test_hf_missing_path_and_unrecognised_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"hf:{tmp_path / 'nope'}")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="neither a save_to_disk folder"):
        load_dataset(f"hf:{tmp_path}")
