"""A model's identity for the run manifest, and the name check that runs before any model loads.

The fingerprint is cheap enough for a 7B checkpoint (file sizes, safetensors headers and a few sampled byte windows
per file: :mod:`unforget.runs.fingerprint`), and tells two fine-tunes of one architecture apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from ..errors import ModelLoadError
from ..registry import did_you_mean
from ..runs.fingerprint import weights_fingerprint
from .zoo import ZOO


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` (one slash, no path prefix): what the hub could resolve. Anything else must exist here."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))


def check_model_name(name: str, *, what: str = "model") -> None:
    """Refuse, before any loading or hub call, a name that is neither a zoo model, an existing path nor a hub id
    (``tiny-lava`` -> "Did you mean 'tiny-llava'?")."""
    if name in ZOO or Path(name).expanduser().exists() or looks_like_hub_id(name):
        return
    hint = did_you_mean(name, ZOO.names())
    if name.startswith((".", "/", "~")) or "/" in name:
        raise ModelLoadError(f"{what} '{name}': no such folder or file.{hint}")
    raise ModelLoadError(f"{what} '{name}' is not a zoo model ({', '.join(ZOO.names())}), a local folder or a hub "
                         f"id (org/name).{hint}")


def _hub_snapshot(name: str) -> Path | None:
    """The local snapshot of a hub id when it is in the Hugging Face cache (no network)."""
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: the id alone is the identity
        return None


def weights_identity(name: str) -> dict[str, Any]:
    """``{"resolved": path or hub id, "fingerprint": ...}`` of a model or adapter name (zoo, folder, file, hub id)."""
    check_model_name(name)
    if name in ZOO:
        path: Path | None = ZOO.get(name).folder()
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser().resolve()
    else:
        path = _hub_snapshot(name)
    if path is None:
        return {"resolved": name, "fingerprint": None, "note": "hub id not in the local cache: not fingerprinted"}
    if not Path(path).exists():
        raise ModelLoadError(f"model '{name}' resolves to {path}, which does not exist")
    return {"resolved": str(path), "fingerprint": weights_fingerprint(path)["digest"]}


def model_identity(model: Any) -> dict[str, Any]:
    """The identity of a ModelConfig (or its dict): weights, adapter and the settings that change outputs (dtype,
    remote code); device, device_map and attention kernel are left out (they change speed, not the numbers
    beyond float noise)."""
    get = model.get if isinstance(model, dict) else (lambda k, d=None: getattr(model, k, d))
    name = get("name", "tiny-llava")
    out: dict[str, Any] = {"name": name, **weights_identity(name), "dtype": get("dtype", "auto"),
                           "trust_remote_code": bool(get("trust_remote_code", False))}
    adapter = get("adapter")
    out["adapter"] = None if not adapter else {"name": adapter, **weights_identity(adapter)}
    return out
