"""A frozen vision tower's features, computed once per image and reused: every epoch, every evaluation, every arm.

Projector-only fine-tuning, LoRA on the language model and partial fine-tuning that leaves the tower alone never
change the vision tower, yet a plain run recomputes it for every image of every epoch, and a study again for every
evaluation image after every epoch and for every arm. :class:`VisionFeatureCache` keeps what the tower returned
for each image and hands it back the next time the same tower sees the same image:

* installed by replacing the tower module's ``forward`` on that one instance (:meth:`VisionFeatureCache.install`,
  a context manager), so the model's parameter names, checkpoints and hooks are untouched and the model's own
  ``get_image_features`` (feature-layer selection, projector) runs as usual on what the tower returned;
* keyed by the tower's identity (a sha256 of its parameters and buffers as they are in memory, recomputed when any
  of them is modified in place) and the image's identity (a sha256 of the preprocessed pixel tensor of that image,
  its dtype and shape, the call's other arguments and the autocast state): a changed tower or a changed image
  misses, and nothing else than a bit-identical input hits;
* a batch whose images are all known is assembled from the stored rows; any other batch runs the real tower on the
  whole batch, exactly as without the cache, and stores the new rows. A row of a batched forward equals that image
  computed alone (checked bit for bit on CPU by the tests), so results equal a run without the cache;
* never used for a tower that trains: from the first call made with grad mode on while a tower parameter has
  ``requires_grad`` (full fine-tuning, partial over vision layers), every call of that installation goes to the
  real tower and nothing more is stored; nor for a call that draws random numbers (dropout in train mode);
* kept in memory up to ``memory_bytes``, then in safetensors shards under ``spill_dir`` (one folder per process),
  which the outermost :func:`vision_feature_cache` removes when its block ends without an error (an interrupted
  study reuses them when it resumes).

What is stored per image: the hidden states of the layers the model feeds its projector (``vision_feature_layer``
of the model's config), and the pooled output. A cached answer's ``hidden_states`` holds those layers only;
asking it for another layer raises :class:`~unforget.errors.ModelLoadError` naming the switch that turns the cache
off. Families whose tower is a separate ``vision_tower`` module with a ``vision_feature_layer`` (LLaVA, LLaVA-NeXT,
LLaVA-OneVision) are cached; others (Qwen2-VL, whose ``visual`` module holds its projector) run as before.

A study opens one cache for its whole run (``with vision_feature_cache(enabled, folder):``); ``finetune`` and the
study's own evaluations install it on the model they hold (``with cached_vision_tower(model):``); a nested
:func:`vision_feature_cache` reuses the open one, so every arm shares it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

CACHE_FOLDER = "vision_features"  # under a study's or a fine-tuning run's folder, removed when the run ends
DEFAULT_MEMORY_BYTES = 4 << 30  # features kept in memory; beyond this they go to safetensors shards
SHARD_BYTES = 256 << 20  # one spilled shard
# arguments a model's forward hands on to its tower with the rest of its keyword arguments, which go to its loss
# function and cache, not to the tower's computation (LLaVA passes them through ``**kwargs``)
PASSED_THROUGH = frozenset({"shift_labels", "num_items_in_batch", "ignore_index", "use_cache"})
_POOLED = "pooled"
_LAST = "last"


def _hidden(index: int) -> str:
    return f"h{index}"


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (any dtype, bf16 included), without a copy for a contiguous CPU tensor."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy())


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers as they are in memory (names, dtypes, shapes, every byte): two
    towers share it exactly when they compute the same function."""
    h = hashlib.sha256()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


class PartialHiddenStates(tuple):
    """The hidden states of a cached tower answer: the stored layers, None elsewhere; indexing a missing layer
    raises a clear error instead of handing back None."""

    def __getitem__(self, index: Any) -> Any:
        value = super().__getitem__(index)
        if value is None:
            raise ModelLoadError(
                f"the vision feature cache keeps only the layers the model feeds its projector "
                f"({[i for i, v in enumerate(self) if v is not None]} of {len(self)}), and layer {index} was asked "
                "for: run with cache_vision_features: false")
        return value


@dataclass
class CacheStats:
    """Images answered from the cache (``reused``), computed by the tower and stored (``computed``; a batch with
    some known images is computed whole, its known ones counted in neither), and tower calls the cache stayed out
    of (``bypassed``: the tower trains, draws random numbers, or got an unusual call)."""

    reused: int = 0
    computed: int = 0
    bypassed: int = 0


class FeatureStore:
    """key -> {name: tensor}: in memory up to ``memory_bytes``, then in safetensors shards under ``folder``.
    Shards already in ``folder`` (an interrupted run's) are read back."""

    def __init__(self, folder: Path | None, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.folder = folder
        self.memory_bytes = memory_bytes
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.memory_used = 0
        self.pending: dict[str, dict[str, torch.Tensor]] = {}
        self.pending_bytes = 0
        self.on_disk: dict[str, tuple[Path, list[str]]] = {}  # key -> (shard, tensor names)
        self._open: dict[Path, Any] = {}
        if folder is not None and folder.is_dir():
            for shard in sorted(folder.glob("*.safetensors")):
                self._index(shard)

    def __contains__(self, key: str) -> bool:
        return key in self.memory or key in self.pending or key in self.on_disk

    def __len__(self) -> int:
        return len(self.memory) + len(self.pending) + len(self.on_disk)

    def get(self, key: str) -> dict[str, torch.Tensor]:
        if key in self.memory:
            return self.memory[key]
        if key in self.pending:
            return self.pending[key]
        shard, names = self.on_disk[key]
        handle = self._open.get(shard)
        if handle is None:
            handle = self._open[shard] = safe_open(str(shard), framework="pt")
        return {name.split("/", 1)[1]: handle.get_tensor(name) for name in names}

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if self.memory_used + size <= self.memory_bytes or self.folder is None:
            self.memory[key] = tensors
            self.memory_used += size
            return
        self.pending[key] = tensors
        self.pending_bytes += size
        if self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the features waiting for disk as one shard (written under a temporary name, then renamed)."""
        if not self.pending or self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = self.folder / f"shard-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = shard.with_suffix(".tmp")
        save_file({f"{k}/{name}": t.contiguous() for k, ts in self.pending.items() for name, t in ts.items()},
                  str(tmp))
        os.replace(tmp, shard)
        self._index(shard)
        self.pending.clear()
        self.pending_bytes = 0

    def close(self, remove: bool) -> None:
        self._open.clear()
        if remove:
            if self.folder is not None and self.folder.exists():
                shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self.flush()
        self.memory.clear()
        self.pending.clear()
        self.on_disk.clear()
        self.memory_used = self.pending_bytes = 0

    def _index(self, shard: Path) -> None:
        try:
            with safe_open(str(shard), framework="pt") as f:
                names = list(f.keys())
        except Exception:  # noqa: BLE001 - a shard cut short by a crash is only a cache miss
            log.info("vision feature cache: %s is unreadable, ignored", shard)
            return
        by_key: dict[str, list[str]] = {}
        for name in names:
            by_key.setdefault(name.split("/", 1)[0], []).append(name)
        for key, key_names in by_key.items():
            self.on_disk[key] = (shard, key_names)


def vision_tower_of(model: Any) -> tuple[Any, list[int]] | None:
    """The separate vision tower of a (peft-wrapped, DDP-unwrapped) model and the layers its projector reads, or
    None for a family without one (Qwen2-VL's ``visual`` holds the projector; its output cannot be cached apart)."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    layer = getattr(getattr(base, "config", None), "vision_feature_layer", None)
    inner = getattr(base, "model", base)
    tower = getattr(inner, "vision_tower", None) or getattr(base, "vision_tower", None)
    if not isinstance(tower, torch.nn.Module) or layer is None:
        return None
    layers = list(layer) if isinstance(layer, (list, tuple)) else [int(layer)]
    return tower, layers


def _draws_random_numbers(tower: torch.nn.Module) -> bool:
    """Whether a forward in the tower's current mode is random (dropout in train mode): then it is not cached."""
    if not tower.training:
        return False
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in tower.modules()):
        return True
    config = getattr(tower, "config", None)
    return any(float(getattr(config, name, 0.0) or 0.0) > 0 for name in
               ("attention_dropout", "dropout", "hidden_dropout_prob", "attention_probs_dropout_prob"))


class VisionFeatureCache:
    """The frozen-tower features of one study (or one fine-tuning run); see the module docstring."""

    def __init__(self, spill_dir: str | Path | None = None, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        self.store = FeatureStore(Path(spill_dir) if spill_dir is not None else None, memory_bytes)
        self.stats = CacheStats()

    def close(self, remove: bool = True) -> None:
        if self.stats.reused or self.stats.computed:
            log.info("vision feature cache: %d images computed, %d reused", self.stats.computed, self.stats.reused)
        self.store.close(remove)

    @contextlib.contextmanager
    def install(self, model: Any) -> Iterator[bool]:
        """Answer ``model``'s vision tower from the cache inside the block; yields whether it was installed (not
        for a family without a separate tower, a sharded tower, or one whose ``forward`` is already wrapped by
        someone else, e.g. accelerate's device_map hooks). Once a call can train the tower, it is left alone."""
        found = vision_tower_of(model)
        if found is None:
            log.info("%s has no separate vision tower; its image features are not cached", type(model).__name__)
            yield False
            return
        tower, layers = found
        if any(type(p).__name__ == "DTensor" for p in tower.parameters()):
            # FSDP shards the tower and gathers it for every forward: its weights are not there to fingerprint
            log.info("the vision tower is sharded (FSDP); its features are not cached")
            yield False
            return
        if "forward" in vars(tower):
            # installed already (a study's evaluation around finetune's): keep that one; wrapped by another: leave it
            yield isinstance(vars(tower)["forward"], _CachedForward)
            return
        tower.forward = _CachedForward(self, tower, tower.forward, layers)
        try:
            yield True
        finally:
            if isinstance(vars(tower).get("forward"), _CachedForward):
                del tower.forward


class _CachedForward:
    """The tower's ``forward`` while the cache is installed."""

    def __init__(self, cache: VisionFeatureCache, tower: torch.nn.Module, original: Callable[..., Any],
                 layers: list[int]):
        self.cache = cache
        self.tower = tower
        self.original = original
        self.layers = layers
        self.params = list(tower.parameters()) + list(tower.buffers())
        self.versions: list[tuple[int, int]] | None = None
        self.fingerprint = ""
        self.trains = False  # set for good by the first call that can train the tower

    def _tower_identity(self) -> str:
        # in-place changes (an optimizer step, a checkpoint loaded into the model) bump a tensor's version:
        # only then is the tower hashed again
        versions = [(t._version, t.data_ptr()) for t in self.params]
        if versions != self.versions:
            with torch.inference_mode(False):
                self.fingerprint = module_fingerprint(self.tower)
            self.versions = versions
        return self.fingerprint

    def __call__(self, pixel_values: Any = None, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        if not self.trains and torch.is_grad_enabled() and any(p.requires_grad for p in self.tower.parameters()):
            # the tower trains: from now on its features change with every step, none is cached
            log.info("the vision tower trains: its features are not cached")
            self.trains = True
        if (self.trains or args or not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() < 2
                or any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k not in PASSED_THROUGH)
                or _draws_random_numbers(self.tower)):
            cache.stats.bypassed += 1
            return self.original(pixel_values, *args, **kwargs)
        keys = self._keys(pixel_values, kwargs)
        store = cache.store
        if all(k in store for k in keys):
            cache.stats.reused += len(keys)
            return self._assemble([store.get(k) for k in keys], pixel_values.device, kwargs)
        out = self.original(pixel_values, **kwargs)
        for i, key in enumerate(keys):
            if key not in store:
                store.put(key, self._row(out, i))
                cache.stats.computed += 1
        return out

    def _keys(self, pixel_values: torch.Tensor, kwargs: dict[str, Any]) -> list[str]:
        device = pixel_values.device.type
        autocast = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None)
        call = (f"{self._tower_identity()}|{pixel_values.dtype}|{tuple(pixel_values.shape[1:])}|{device}|"
                f"{autocast}|{sorted((k, repr(v)) for k, v in kwargs.items() if k not in PASSED_THROUGH)}").encode()
        rows = pixel_values.detach().cpu()
        keys = []
        for i in range(rows.shape[0]):
            h = hashlib.sha256(call)
            h.update(_tensor_bytes(rows[i]))
            keys.append(h.hexdigest())
        return keys

    def _row(self, out: Any, i: int) -> dict[str, torch.Tensor]:
        """Image ``i``'s share of the tower's answer, copied to the CPU (a normal tensor even when computed under
        inference mode: a trained projector saves its input for the backward pass)."""
        def take(t: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad():
                return t[i].detach().to("cpu", copy=True).clone()

        row: dict[str, torch.Tensor] = {}
        hidden = getattr(out, "hidden_states", None)
        if hidden is not None:
            n = len(hidden)
            for layer in self.layers:
                row[_hidden(layer % n)] = take(hidden[layer])
            row["n_hidden"] = torch.tensor(n)
        else:
            row[_LAST] = take(out.last_hidden_state)
        pooled = getattr(out, "pooler_output", None)
        if isinstance(pooled, torch.Tensor):
            row[_POOLED] = take(pooled)
        return row

    def _assemble(self, rows: list[dict[str, torch.Tensor]], device: torch.device, kwargs: dict[str, Any]) -> Any:
        """The tower's answer for a batch, from the stored rows (the dataclass CLIP and SigLIP towers return)."""
        def stack(name: str) -> torch.Tensor:
            return torch.stack([r[name] for r in rows]).to(device)

        first = rows[0]
        pooled = stack(_POOLED) if _POOLED in first else None
        if _LAST in first:
            return BaseModelOutputWithPooling(last_hidden_state=stack(_LAST), pooler_output=pooled)
        n = int(first["n_hidden"])
        hidden: list[torch.Tensor | None] = [None] * n
        for name in first:
            if name.startswith("h"):
                hidden[int(name[1:])] = stack(name)
        states = PartialHiddenStates(hidden)
        last = hidden[n - 1]
        if kwargs.get("return_dict") is False:
            return tuple(v for v in (last, pooled, states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled, hidden_states=states)


_ACTIVE: contextvars.ContextVar[VisionFeatureCache | None] = contextvars.ContextVar("vision_feature_cache",
                                                                                      default=None)


def active_cache() -> VisionFeatureCache | None:
    """The cache of the enclosing :func:`vision_feature_cache` block, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def vision_feature_cache(enabled: bool = True, spill_dir: str | Path | None = None,
                         memory_bytes: int = DEFAULT_MEMORY_BYTES) -> Iterator[VisionFeatureCache | None]:
    """Open a feature cache for the block (the one already open when nested, so a study's arms share one);
    ``enabled`` False: none inside the block, even if an outer block opened one. Spilled features go to
    ``spill_dir/rank<N>`` and are removed when the block ends without an error."""
    if not enabled:
        token = _ACTIVE.set(None)
        try:
            yield None
        finally:
            _ACTIVE.reset(token)
        return
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    folder = Path(spill_dir) / f"rank{os.environ.get('RANK', '0')}" if spill_dir is not None else None
    cache = VisionFeatureCache(folder, memory_bytes)
    token = _ACTIVE.set(cache)
    ok = False
    try:
        yield cache
        ok = True
    finally:
        _ACTIVE.reset(token)
        cache.close(remove=ok)
        if ok and spill_dir is not None and Path(spill_dir).is_dir() and not any(Path(spill_dir).iterdir()):
            Path(spill_dir).rmdir()


@contextlib.contextmanager
def cached_vision_tower(model: Any) -> Iterator[bool]:
    """Install the open cache (if any) on ``model``'s vision tower for the block; yields whether it is."""
    cache = _ACTIVE.get()
    if cache is None:
        yield False
        return
    with cache.install(model) as installed:
        yield installed
