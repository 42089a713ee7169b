"""A restricted unpickler for the CIFAR python batches: dicts, lists, bytes, str, ints and plain numeric numpy arrays,
nothing that names other code."""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any, Callable

import numpy as np

# numpy's own dtype/ndarray __setstate__ trust their input: a malformed state can crash the interpreter
# (np.dtype("u1").__setstate__((3, "|", None, -1, -1, 0)) segfaults numpy 2.4). So the pickle VM never touches
# numpy: the allowed globals map to stand-ins that check the pickled state, and real arrays are built with
# np.frombuffer only after every check passed.
_SIMPLE_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})
_MAX_DIMS = 32


def _ascii(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        raise pickle.UnpicklingError(f"{what} is {type(value).__name__}, expected text")
    return value


class _PickledDType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` + its state; plain numeric dtypes only."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        self.spec = _ascii(spec, "dtype")
        if self.spec not in _SIMPLE_DTYPES:
            raise pickle.UnpicklingError(f"dtype '{self.spec}' is not a plain numeric type")
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # (version 3|4, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise pickle.UnpicklingError("malformed dtype state")
        byteorder = _ascii(state[1], "dtype byte order")
        if byteorder not in ("|", "<", ">", "=") or any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("dtype state is not that of a plain numeric type")
        self.byteorder = byteorder

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype if self.byteorder in ("|", "=") else dtype.newbyteorder(self.byteorder)


class _PickledArray:
    """Stand-in for an ndarray under reconstruction; ``array`` is set once its state checked out."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def fill(self, raw: Any, dtype: Any, shape: Any, fortran: bool) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError("array state given twice")
        if not isinstance(dtype, _PickledDType):
            raise pickle.UnpicklingError("array dtype is not a pickled numpy dtype")
        if (not isinstance(shape, tuple) or len(shape) > _MAX_DIMS
                or not all(type(n) is int and 0 <= n < 2**40 for n in shape)):
            raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
        if isinstance(raw, pickle.PickleBuffer):
            raw = raw.raw().tobytes()
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("array data is not raw bytes (object arrays are refused)")
        resolved = dtype.resolve()
        count = int(np.prod(shape, dtype=object))
        if len(raw) != count * resolved.itemsize:
            raise pickle.UnpicklingError(f"array data holds {len(raw)} bytes, shape {shape} needs "
                                         f"{count * resolved.itemsize}")
        self.array = np.frombuffer(bytes(raw), dtype=resolved, count=count).reshape(shape,
                                                                                 order="F" if fortran else "C")

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw) or, from old numpy, (shape, dtype, is_fortran, raw)
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state
        self.fill(raw, dtype, shape, bool(fortran))


_NDARRAY = object()  # what numpy.ndarray unpickles to: only a marker for _reconstruct's subtype argument


def _reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> _PickledArray:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("only plain numpy.ndarray can be reconstructed")
    return _PickledArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> _PickledArray:
    """Protocol-5 arrays (what numpy writes for Python 3 re-pickled copies)."""
    array = _PickledArray()
    array.fill(buf, dtype, shape, _ascii(order, "array order") == "F")
    return array


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 writes bytes into protocol-2 pickles (``_codecs.encode(text, 'latin1')``); nothing else."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _Callable:
    """What a pickle gets for an allowed global: callable, but BUILD cannot set attributes on it (which on the
    bare function or class would change this module for every later load)."""

    __slots__ = ("target",)

    def __init__(self, target: Callable[..., Any]):
        self.target = target

    def __call__(self, *args: Any) -> Any:
        return self.target(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on a global")


_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Callable(_PickledDType),
    ("numpy.core.multiarray", "_reconstruct"): _Callable(_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Callable(_reconstruct),
    ("numpy.core.numeric", "_frombuffer"): _Callable(_frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _Callable(_frombuffer),
    ("_codecs", "encode"): _Callable(_latin1_encode),
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names code outside the allowed globals (``qualname``: which)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, str, ints (built by opcodes, no globals) and plain numeric numpy arrays:
    the official CIFAR files name numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype, and
    those resolve to checking stand-ins. Any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None


def _materialise(obj: Any) -> Any:
    """Swap the stand-ins in an unpickled structure for real numpy arrays / dtypes."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array never received its data")
        return obj.array
    if isinstance(obj, _PickledDType):
        return obj.resolve()
    if isinstance(obj, dict):
        return {_materialise(k): _materialise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def safe_unpickle(raw: bytes) -> Any:
    """The object pickled in ``raw``, with real numpy arrays; :class:`ForbiddenGlobal` for a pickle that names any
    code but numpy's array reconstruction, another exception for a malformed pickle."""
    # Walk the opcodes first: pickletools checks each declared string / bytes length against what the file
    # holds, whereas the unpickler allocates the declared length before reading (a flipped length byte
    # would ask for gigabytes).
    for _ in pickletools.genops(raw):
        pass
    return _materialise(_CifarUnpickler(io.BytesIO(raw), encoding="bytes").load())
