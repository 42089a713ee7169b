"""Read base and fine-tuned weights tensor by tensor, whatever form the fine-tuned model takes.

A :class:`Checkpoint` is a read-only set of named tensors fetched one at a time (safetensors shards are
memory-mapped through ``safe_open``), so a 7B model is never held twice. Fine-tuned weights come as

- a full Hugging Face folder (``model.safetensors`` or shards + ``model.safetensors.index.json``),
- a peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), merged on the fly
  onto the base exactly as peft's ``merge_and_unload`` does: ``W + B @ A * lora_alpha / r``,
- a partial checkpoint (e.g. projector-only): a safetensors file with some tensors, the rest being the base.

Every fine-tuned checkpoint is exposed under the base's tensor names (:func:`open_checkpoint` with
``base=``), and a tensor the base lacks or with another shape is a :class:`ModelLoadError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import ModelLoadError
from .keys import match_keys

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
SAFETENSORS_INDEX = "model.safetensors.index.json"

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Checkpoint(ABC):
    """Named tensors read one at a time. ``folder`` is the HF model folder behind it, when there is one."""

    source: str = "<checkpoint>"
    folder: Path | None = None

    @abstractmethod
    def keys(self) -> list[str]: ...

    @abstractmethod
    def info(self, key: str) -> TensorInfo: ...

    @abstractmethod
    def get(self, key: str) -> torch.Tensor:
        """The tensor on CPU in its stored dtype."""

    def changed_keys(self) -> list[str]:
        """Keys whose value may differ from the base (all of them unless the checkpoint knows better)."""
        return self.keys()

    def edge_rows(self, key: str) -> torch.Tensor:
        """The first and last rows of a tensor, flattened: enough to fingerprint it cheaply."""
        tensor = self.get(key)
        if tensor.dim() == 0:
            return tensor.reshape(1)
        return torch.cat([tensor[:1].reshape(-1), tensor[-1:].reshape(-1)])

    def __contains__(self, key: object) -> bool:
        return key in set(self.keys())


class SafetensorsCheckpoint(Checkpoint):
    """One safetensors file, or the shards of a HF folder, memory-mapped with ``safe_open``."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.source = str(path)
        if path.is_dir():
            self.folder = path
            files = _weight_files(path)
        else:
            files = [path]
        if not files:
            raise ModelLoadError(f"{path}: no *.safetensors weights found")
        self._handles: dict[Path, Any] = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            if not file.is_file():
                raise ModelLoadError(f"{file}: listed in {SAFETENSORS_INDEX} but missing; the download is incomplete")
            try:
                handle = safe_open(str(file), framework="pt", device="cpu")
            except Exception as exc:  # safetensors raises its own error types for corrupt headers
                raise ModelLoadError(f"{file}: not a readable safetensors file ({exc})") from exc
            self._handles[file] = handle
            for key in handle.keys():
                self._file_of[key] = file

    def keys(self) -> list[str]:
        return list(self._file_of)

    def _handle(self, key: str) -> Any:
        try:
            return self._handles[self._file_of[key]]
        except KeyError:
            raise ModelLoadError(f"{self.source}: no tensor named '{key}'") from None

    def info(self, key: str) -> TensorInfo:
        piece = self._handle(key).get_slice(key)
        return TensorInfo(tuple(piece.get_shape()), _SAFETENSORS_DTYPES[piece.get_dtype()])

    def get(self, key: str) -> torch.Tensor:
        return self._handle(key).get_tensor(key)

    def edge_rows(self, key: str) -> torch.Tensor:
        piece = self._handle(key).get_slice(key)
        shape = piece.get_shape()
        if len(shape) == 0 or shape[0] == 0:
            return self.get(key).reshape(-1)
        return torch.cat([piece[0:1].reshape(-1), piece[shape[0] - 1 : shape[0]].reshape(-1)])


# Safetensors files that training folders keep next to the weights (optimizer, RNG state) or that hold a patch.
_NOT_WEIGHTS = re.compile(r"^(optimizer|rng_state|scheduler|patch)([._-].*)?\.safetensors$")


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder: the shards its index lists, ``model.safetensors``, or its only other
    safetensors file (e.g. ``projector.safetensors`` of a projector-only checkpoint)."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({exc})") from exc
        return sorted({folder / name for name in weight_map.values()})
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    candidates = sorted(p for p in folder.glob("*.safetensors") if not _NOT_WEIGHTS.match(p.name))
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ModelLoadError(f"{folder} holds several weight files ({names}) and no {SAFETENSORS_INDEX}; pass the file")
    return candidates


class StateDictCheckpoint(Checkpoint):
    """Tensors already in memory (a state dict, a loaded pickle)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], source: str = "<state dict>", folder: Path | None = None):
        self._tensors = dict(tensors)
        self.source = source
        self.folder = folder

    def keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        tensor = self._lookup(key)
        return TensorInfo(tuple(tensor.shape), tensor.dtype)

    def get(self, key: str) -> torch.Tensor:
        return self._lookup(key).detach().cpu()

    def _lookup(self, key: str) -> torch.Tensor:
        try:
            return self._tensors[key]
        except KeyError:
            raise ModelLoadError(f"{self.source}: no tensor named '{key}'") from None


class OverlayCheckpoint(Checkpoint):
    """A base with some tensors replaced (a partial checkpoint, or a full one saved under other names)."""

    def __init__(self, base: Checkpoint, overrides: Checkpoint, names: Mapping[str, str]):
        """``names`` maps each override key onto the base key it replaces."""
        self.base = base
        self.overrides = overrides
        self.source = overrides.source
        self.folder = overrides.folder
        self._override_of = {base_key: key for key, base_key in names.items()}

    def keys(self) -> list[str]:
        return self.base.keys()

    def changed_keys(self) -> list[str]:
        return list(self._override_of)

    def info(self, key: str) -> TensorInfo:
        if key in self._override_of:
            return self.overrides.info(self._override_of[key])
        return self.base.info(key)

    def get(self, key: str) -> torch.Tensor:
        if key in self._override_of:
            return self.overrides.get(self._override_of[key])
        return self.base.get(key)


@dataclass(frozen=True)
class _LoraFactors:
    a: torch.Tensor
    b: torch.Tensor
    scaling: float
    transpose: bool


_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.(?P<param>weight|bias)$")
_LORA_EMBEDDING_KEY = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<which>A|B)(?:\.[^.]+)?$")
# peft options whose merge is not W + B @ A * scaling; such adapters must be merged by peft itself.
_UNSUPPORTED_LORA_OPTIONS = ("use_dora", "target_parameters", "layer_replication", "alora_invocation_tokens",
                             "trainable_token_indices", "use_bdlora")


class LoraCheckpoint(Checkpoint):
    """A base merged with a peft LoRA adapter on the fly, tensor by tensor.

    Reproduces peft's ``LoraLayer.get_delta_weight`` + ``merge``: ``delta = (B @ A) * scaling`` (transposed
    for ``fan_in_fan_out``; computed in float32 for half-precision factors, as peft does on CPU), with
    ``scaling = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA, per-module ``alpha_pattern``), then
    ``W += delta``. ``modules_to_save`` tensors (and embedding weights saved with an embedding LoRA)
    replace the base's.
    """

    def __init__(self, base: Checkpoint, adapter_folder: str | Path, *, allow_pickle: bool = False):
        folder = Path(adapter_folder)
        self.base = base
        self.source = str(folder)
        self.folder = base.folder
        config_path = folder / "adapter_config.json"
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{config_path}: cannot read the peft adapter config ({exc})") from exc
        if config.get("peft_type", "LORA") != "LORA":
            raise ModelLoadError(
                f"{folder}: peft adapter type {config.get('peft_type')} is not supported, only LORA; merge it with "
                "peft (model.merge_and_unload(); save_pretrained) and pass the merged folder"
            )
        for option in _UNSUPPORTED_LORA_OPTIONS:
            if config.get(option):
                raise ModelLoadError(
                    f"{folder}: LoRA adapters with '{option}' are not merged here; merge it with peft "
                    "(model.merge_and_unload(); save_pretrained) and pass the merged folder"
                )
        tensors = _read_adapter_tensors(folder, allow_pickle=allow_pickle)
        alpha = float(config.get("lora_alpha", 8))  # peft's default
        alpha_pattern: dict[str, float] = config.get("alpha_pattern") or {}
        rslora = bool(config.get("use_rslora", False))
        fan_in_fan_out = bool(config.get("fan_in_fan_out", False))

        factors: dict[str, dict[str, torch.Tensor]] = {}
        bias_b: dict[str, torch.Tensor] = {}
        overrides: dict[str, torch.Tensor] = {}
        embedding_modules: set[str] = set()
        for raw_key, tensor in tensors.items():
            key = raw_key.removeprefix("base_model.model.")
            if m := _LORA_KEY.match(key):
                if m["param"] == "bias":
                    bias_b[m["module"]] = tensor
                else:
                    factors.setdefault(m["module"], {})[m["which"]] = tensor
            elif m := _LORA_EMBEDDING_KEY.match(key):
                factors.setdefault(m["module"], {})[m["which"]] = tensor
                embedding_modules.add(m["module"])
            elif "lora_" in key or "trainable_tokens" in key:
                raise ModelLoadError(
                    f"{folder}: adapter tensor '{raw_key}' is not a plain LoRA factor (DoRA or another variant?); "
                    "merge it with peft (merge_and_unload) and pass the merged folder"
                )
            else:
                # modules_to_save copies, and embedding weights peft saves next to an embedding LoRA
                # (``embed_tokens.base_layer.weight``): full replacements of the base tensor
                overrides[key.replace(".base_layer.", ".")] = tensor

        targets = {module + ".weight": module for module in factors}
        targets.update({module + ".bias": module for module in bias_b})
        names = match_keys(list(targets) + list(overrides), base.keys(), what=f"adapter tensor of {folder}")
        self._lora: dict[str, _LoraFactors] = {}
        self._lora_bias: dict[str, tuple[torch.Tensor, float]] = {}
        for module, pair in factors.items():
            if set(pair) != {"A", "B"}:
                raise ModelLoadError(f"{folder}: LoRA module '{module}' has lora_{set('AB') - set(pair)} missing")
            if pair["A"].dim() != 2 or pair["B"].dim() != 2:
                raise ModelLoadError(
                    f"{folder}: LoRA module '{module}' is not a linear/embedding layer (convolution LoRA); merge "
                    "it with peft and pass the merged folder"
                )
            rank = pair["A"].shape[0]
            module_alpha = float(alpha_pattern.get(_pattern_key(list(alpha_pattern), module), alpha))
            scaling = module_alpha / math.sqrt(rank) if rslora else module_alpha / rank
            is_embedding = module in embedding_modules
            transpose = True if is_embedding else fan_in_fan_out
            base_key = names[module + ".weight"]
            out_features, in_features = pair["B"].shape[0], pair["A"].shape[1]
            delta_shape = (in_features, out_features) if transpose else (out_features, in_features)
            if tuple(base.info(base_key).shape) != delta_shape:
                raise ModelLoadError(
                    f"{folder}: LoRA delta for '{base_key}' has shape {list(delta_shape)} but the base tensor has "
                    f"{list(base.info(base_key).shape)}: the adapter was trained on another base model"
                )
            self._lora[base_key] = _LoraFactors(pair["A"], pair["B"], scaling, transpose)
            if module in bias_b:
                self._lora_bias[names[module + ".bias"]] = (bias_b[module], scaling)
        self._overrides: dict[str, torch.Tensor] = {}
        for key, tensor in overrides.items():
            base_key = names[key]
            _check_same_shape(base_key, base.info(base_key).shape, tuple(tensor.shape), folder)
            self._overrides[base_key] = tensor

    def keys(self) -> list[str]:
        return self.base.keys()

    def changed_keys(self) -> list[str]:
        return list({**dict.fromkeys(self._lora), **dict.fromkeys(self._lora_bias), **dict.fromkeys(self._overrides)})

    def info(self, key: str) -> TensorInfo:
        if key in self._overrides:
            tensor = self._overrides[key]
            return TensorInfo(tuple(tensor.shape), tensor.dtype)
        return self.base.info(key)

    def get(self, key: str) -> torch.Tensor:
        weight = self._overrides[key] if key in self._overrides else self.base.get(key)
        if key in self._lora:
            weight = weight.clone()
            weight += self.delta(key)
        elif key in self._lora_bias:
            b_bias, scaling = self._lora_bias[key]
            weight = weight.clone()
            weight += b_bias * scaling
        return weight

    def delta(self, key: str) -> torch.Tensor:
        """``B @ A * scaling`` for one adapted weight, in the adapter's dtype (peft's get_delta_weight)."""
        f = self._lora[key]
        dtype = f.b.dtype
        half = dtype in (torch.float16, torch.bfloat16)
        a, b = (f.a.float(), f.b.float()) if half else (f.a, f.b)
        product = b @ a
        if f.transpose:
            product = product.T
        delta = product * f.scaling
        return delta.to(dtype) if half else delta


def _pattern_key(patterns: list[str], module: str) -> str:
    """peft's rule for rank_pattern / alpha_pattern keys (peft.utils.other.get_pattern_key)."""
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", module):
            return pattern
    return module


def _read_adapter_tensors(folder: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        return load_file(str(weights))
    for name in ("adapter_model.bin", "adapter_model.pt"):
        if (folder / name).is_file():
            return _load_pickle(folder / name, allow_pickle=allow_pickle)
    raise ModelLoadError(f"{folder}: peft adapter folder without adapter_model.safetensors")


def _load_pickle(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if not allow_pickle:
        raise ModelLoadError(
            f"{path} is a pickle checkpoint; unpickling can run arbitrary code, so it is refused. Convert it to "
            "safetensors where you trust the source (model.save_pretrained(dir, safe_serialization=True)) or pass "
            "allow_pickle=True (--allow-pickle) if you trust this file."
        )
    try:
        # weights_only still refuses arbitrary objects: a plain state dict is all a checkpoint needs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot load this pickle checkpoint as a plain state dict ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: the pickle holds a {type(state).__name__}, not a dict of tensors")
    return dict(state)


def _pickle_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def _check_same_shape(key: str, base_shape: tuple[int, ...], shape: tuple[int, ...], source: Any) -> None:
    if tuple(base_shape) != tuple(shape):
        raise ModelLoadError(
            f"{source}: tensor '{key}' has shape {list(shape)} but the base has {list(base_shape)}: the two "
            "models do not have the same architecture"
        )


def _open_plain(path: Path, *, allow_pickle: bool) -> Checkpoint:
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist")
    if path.is_dir():
        if _weight_files(path):
            return SafetensorsCheckpoint(path)
        pickles = _pickle_files(path)
        if pickles:
            tensors: dict[str, torch.Tensor] = {}
            for file in pickles:
                tensors.update(_load_pickle(file, allow_pickle=allow_pickle))
            return StateDictCheckpoint(tensors, source=str(path), folder=path)
        raise ModelLoadError(f"{path}: no weights found (*.safetensors)")
    if path.suffix == ".safetensors":
        return SafetensorsCheckpoint(path)
    if path.suffix in PICKLE_SUFFIXES:
        return StateDictCheckpoint(_load_pickle(path, allow_pickle=allow_pickle), source=str(path))
    raise ModelLoadError(f"{path}: not a weights file (expected .safetensors)")


def open_checkpoint(
    source: str | Path | Checkpoint, *, base: Checkpoint | None = None, allow_pickle: bool = False
) -> Checkpoint:
    """Open weights from a folder or file. With ``base``, the result is aligned onto the base's tensor
    names: a LoRA adapter folder is merged onto it, a partial checkpoint is completed by it, and a tensor
    the base lacks or with another shape raises :class:`ModelLoadError`."""
    if isinstance(source, Checkpoint):
        checkpoint = source
    else:
        path = Path(source).expanduser()
        if path.is_dir() and (path / "adapter_config.json").is_file():
            if base is None:
                raise ModelLoadError(f"{path} is a LoRA adapter: it needs the base model it was trained on")
            return LoraCheckpoint(base, path, allow_pickle=allow_pickle)
        checkpoint = _open_plain(path, allow_pickle=allow_pickle)
    if base is None or checkpoint is base:
        return checkpoint
    return align_to_base(checkpoint, base)


def align_to_base(checkpoint: Checkpoint, base: Checkpoint) -> Checkpoint:
    """``checkpoint`` seen under the base's names; the tensors it lacks are the base's."""
    if isinstance(checkpoint, (LoraCheckpoint, OverlayCheckpoint)) and getattr(checkpoint, "base", None) is base:
        return checkpoint
    names = match_keys(checkpoint.keys(), base.keys(), what=f"tensor of {checkpoint.source}")
    for key, base_key in names.items():
        _check_same_shape(base_key, base.info(base_key).shape, checkpoint.info(key).shape, checkpoint.source)
    base_keys = base.keys()
    if len(names) == len(base_keys) and all(k == v for k, v in names.items()):
        return checkpoint
    if len(names) < len(base_keys):
        log.info("%s holds %d of the base's %d tensors; the others are taken from the base",
                 checkpoint.source, len(names), len(base_keys))
    return OverlayCheckpoint(base, checkpoint, names)


def fingerprint(checkpoint: Checkpoint) -> str:
    """A short hash of names, shapes, dtypes and each tensor's first and last rows: tells two base models
    apart without reading every weight."""
    digest = hashlib.sha256()
    for key in sorted(checkpoint.keys()):
        info = checkpoint.info(key)
        digest.update(f"{key}|{info.dtype}|{list(info.shape)}|".encode())
        edges = checkpoint.edge_rows(key).contiguous()
        digest.update(edges.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]
