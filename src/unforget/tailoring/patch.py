"""A tailoring result as a small weight-space object: new values for some entries of some tensors.

In the spirit of mlfoundations/task_vectors' ``TaskVector``: a :class:`TailorPatch` can be scaled and
applied to a base (a state dict, a loaded model, or a HF folder on disk through :func:`apply_patch`).
Values are stored as they will be in the model (not as deltas), so applying at scaling 1 reproduces the
tailored weights bit for bit; at another scaling an entry becomes ``base + scaling * (value - base)``.

``patch.safetensors`` holds per tensor ``<name>@indices`` (int64 flat positions; absent when every entry
is replaced) and ``<name>@values``, with the method, sparsity, scaling and the base model's fingerprint in
the file's metadata.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, overload

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import ModelLoadError
from .checkpoints import Checkpoint, fingerprint, open_checkpoint
from .hf_folder import write_hf_folder
from .keys import match_keys

PATCH_FORMAT = "unforget-patch/1"


@dataclass
class TensorPatch:
    """New values for one tensor: at flat ``indices`` (increasing), or everywhere when ``indices`` is None."""

    shape: tuple[int, ...]
    values: torch.Tensor
    indices: torch.Tensor | None = None

    @property
    def dense(self) -> bool:
        return self.indices is None

    @property
    def size(self) -> int:
        """How many entries the patch sets."""
        return int(self.values.numel())

    def apply(self, base: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
        if tuple(base.shape) != tuple(self.shape):
            raise ModelLoadError(f"patch for a tensor of shape {list(self.shape)} applied to shape {list(base.shape)}")
        out = base.detach().clone().contiguous()
        flat = out.view(-1)
        where: Any = slice(None) if self.indices is None else self.indices.to(flat.device)
        values = self.values.reshape(-1).to(flat.device)
        if scaling == 1.0:
            flat[where] = values.to(out.dtype)
        else:
            old = flat[where].float()
            flat[where] = (old + scaling * (values.float() - old)).to(out.dtype)
        return out


@dataclass
class TailorPatch:
    """Per-tensor :class:`TensorPatch` es plus what made them and which base they belong to."""

    tensors: dict[str, TensorPatch]
    method: str
    base_fingerprint: str
    sparsity: float | None = None
    scaling: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of entries the patch sets."""
        return sum(p.size for p in self.tensors.values())

    def scaled(self, factor: float) -> "TailorPatch":
        return replace(self, scaling=self.scaling * factor)

    def __mul__(self, factor: float) -> "TailorPatch":
        return self.scaled(factor)

    __rmul__ = __mul__

    def patch_tensor(self, key: str, base: torch.Tensor) -> torch.Tensor:
        """``base`` with this patch's entries for ``key`` (unchanged when the patch does not touch it)."""
        patch = self.tensors.get(key)
        return base if patch is None else patch.apply(base, self.scaling)

    @overload
    def apply_to(self, target: nn.Module) -> nn.Module: ...

    @overload
    def apply_to(self, target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def apply_to(self, target: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module | dict[str, torch.Tensor]:
        """A state dict -> a new patched dict; a model -> patched in place (names matched across the saved
        and in-memory naming schemes) and returned."""
        if isinstance(target, nn.Module):
            state = target.state_dict()
            names = match_keys(self.tensors, state.keys(), what="patched tensor")
            with torch.no_grad():
                for key, name in names.items():
                    state[name].copy_(self.patch_tensor(key, state[name]))
            return target
        names = match_keys(self.tensors, target.keys(), what="patched tensor")
        patched = dict(target)
        for key, name in names.items():
            patched[name] = self.patch_tensor(key, target[name])
        return patched

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        shapes = {}
        for key, patch in self.tensors.items():
            tensors[f"{key}@values"] = patch.values.reshape(-1).contiguous()
            if patch.indices is not None:
                tensors[f"{key}@indices"] = patch.indices.to(torch.int64).contiguous()
            shapes[key] = list(patch.shape)
        metadata = {
            "format": PATCH_FORMAT,
            "method": self.method,
            "base_fingerprint": self.base_fingerprint,
            "sparsity": json.dumps(self.sparsity),
            "scaling": json.dumps(self.scaling),
            "options": json.dumps(self.options, default=str),
            "shapes": json.dumps(shapes),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TailorPatch":
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != PATCH_FORMAT:
                    raise ModelLoadError(f"{path}: not an unforget patch (format {metadata.get('format')!r})")
                shapes = json.loads(metadata["shapes"])
                names = set(handle.keys())
                tensors = {}
                for key, shape in shapes.items():
                    indices = handle.get_tensor(f"{key}@indices") if f"{key}@indices" in names else None
                    tensors[key] = TensorPatch(tuple(shape), handle.get_tensor(f"{key}@values"), indices)
        except ModelLoadError:
            raise
        except Exception as exc:  # missing file, corrupt header
            raise ModelLoadError(f"{path}: cannot read the patch ({exc})") from exc
        return cls(
            tensors=tensors,
            method=metadata.get("method", "unknown"),
            base_fingerprint=metadata.get("base_fingerprint", ""),
            sparsity=json.loads(metadata.get("sparsity", "null")),
            scaling=json.loads(metadata.get("scaling", "1.0")),
            options=json.loads(metadata.get("options", "{}")),
        )

    def check_base(self, base: Checkpoint) -> None:
        """Refuse a base model other than the one the patch was made from."""
        for key, patch in self.tensors.items():
            if key not in base:
                raise ModelLoadError(f"the patch changes '{key}', which {base.source} does not have")
            if tuple(base.info(key).shape) != tuple(patch.shape):
                raise ModelLoadError(
                    f"the patch's '{key}' has shape {list(patch.shape)} but {base.source} has "
                    f"{list(base.info(key).shape)}"
                )
            if patch.indices is not None and patch.indices.numel() and int(patch.indices.max()) >= math.prod(patch.shape):
                raise ModelLoadError(f"the patch's indices for '{key}' run past the tensor: the patch is corrupt")
        found = fingerprint(base)
        if self.base_fingerprint and found != self.base_fingerprint:
            raise ModelLoadError(
                f"the patch was made from another base model (fingerprint {self.base_fingerprint}, "
                f"{base.source} has {found}); apply it to the base it was made from, or pass check_base=False"
            )


def apply_patch(
    base_folder: str | Path,
    patch: TailorPatch | str | Path,
    out_folder: str | Path,
    *,
    scaling: float | None = None,
    check_base: bool = True,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Write ``base_folder`` with ``patch`` applied as a HF folder in ``out_folder`` (configs copied)."""
    if not isinstance(patch, TailorPatch):
        patch = TailorPatch.load(patch)
    if scaling is not None:
        patch = replace(patch, scaling=scaling)
    base = open_checkpoint(base_folder)
    if check_base:
        patch.check_base(base)
    return write_hf_folder(
        base, out_folder, transform=patch.patch_tensor, max_shard_size=max_shard_size, overwrite=overwrite
    )
