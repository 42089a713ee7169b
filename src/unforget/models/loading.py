"""Load Hugging Face LLaVA-family models (local folder, hub id, or an unforget zoo name).

Every model goes through the same path: AutoProcessor + AutoModelForImageTextToText, prompts built with the
processor's own chat template. The embedded default (``tiny-llava``) is an ordinary HF folder loaded this way.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
# transformers is imported as a module and its classes looked up where they are used: the package loads a class on
# first access (start-up time: the Auto classes take seconds to load, and many modules import this one)
import transformers

from ..errors import ModelLoadError
from .config import ModelConfig
from .families import FAMILIES, family_of
from .zoo import resolve_zoo_name

log = logging.getLogger(__name__)


_DTYPES = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """A model with its processor; ``family`` is the config's model_type (llava, qwen2_vl, ...)."""

    model: Any
    processor: Any
    family: str
    source: str

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_dtype(name: str | torch.dtype | None, device: str) -> Any:
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        # bf16 where the hardware has it, fp32 on CPU (bf16 matmuls are slow on most CPUs)
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelLoadError(f"unknown dtype '{name}'; use one of {', '.join(_DTYPES)}") from None


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was asked for but CUDA is not available here; use --device cpu")
    return device


def process_device(device: str | None) -> str | None:
    """Under a launcher (``accelerate launch`` / torchrun) each process has its own GPU: ``cuda`` / ``auto`` become
    ``cuda:<local rank>``; otherwise ``device`` as given."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.cuda.is_available() or device not in (
            None, "auto", "cuda"):
        return device
    # accelerate is needed only under a launcher, and its import is slow: imported here
    from accelerate import PartialState

    return str(PartialState().device)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve_model_path(name_or_path: str) -> str:
    """A zoo name -> its folder; a local folder -> itself; a hub id -> itself (checked against the cache offline)."""
    zoo = resolve_zoo_name(name_or_path)
    if zoo is not None:
        return str(zoo)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} exists but has no config.json: pass a Hugging Face model folder "
                "(the output of save_pretrained / a downloaded snapshot)"
            )
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"model folder {name_or_path} does not exist")
    return name_or_path


def _hub_error(name: str, exc: Exception) -> ModelLoadError:
    hint = (
        f"'{name}' is not a local folder and could not be fetched from the Hugging Face Hub"
        + (" (offline mode: HF_HUB_OFFLINE=1)" if _offline() else " (no network, or the id is wrong)")
        + f". Download it where there is network (`huggingface-cli download {name} --local-dir DIR`) "
        "and pass the folder: --model DIR"
    )
    return ModelLoadError(f"{hint}. Cause: {type(exc).__name__}: {exc}")


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    adapter: str | None = None,
) -> LoadedModel:
    """Load model + processor. ``device_map="auto"`` spreads a model larger than one device (accelerate);
    ``attn_implementation`` is "eager", "sdpa" or "flash_attention_2" (when installed). ``adapter`` is a peft
    adapter folder applied on top (kept unmerged)."""
    path = resolve_model_path(name_or_path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if Path(path).exists():
            raise ModelLoadError(f"{path}: cannot read config.json: {exc}") from exc
        raise _hub_error(name_or_path, exc) from exc
    family = getattr(config, "model_type", "unknown")
    if family not in FAMILIES:
        log.warning("model type '%s' is not one of the tested families (%s); trying anyway",
                    family, ", ".join(FAMILIES))
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if Path(path).exists():
        _refuse_pickle_only(Path(path))
        kwargs["use_safetensors"] = True
    try:
        processor = load_processor(path, family, trust_remote_code=trust_remote_code)
        model = transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        if Path(path).exists():
            raise ModelLoadError(f"{path}: cannot load the model: {type(exc).__name__}: {exc}") from exc
        raise _hub_error(name_or_path, exc) from exc
    if device_map is None:
        model.to(dev)
    if adapter:
        model = load_adapter(model, adapter)
    model.eval()
    tok = getattr(processor, "tokenizer", None)
    if tok is not None and tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model, processor=processor, family=family, source=str(path))


def load_processor(path: str, family: str, *, trust_remote_code: bool = False) -> Any:
    """The model's processor. For a family whose processor also has a video part (its video processor needs
    torchvision), the processor is assembled from the tokenizer and the image processor alone: unforget passes images
    only, and the image side needs none of torchvision's compiled ops (transformers picks the PIL image processor
    when torchvision is absent). The class keeps its name, so a saved processor is the family's own."""
    if not family_of(family).video_processor:
        return transformers.AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    cls = transformers.models.auto.processing_auto.processor_class_from_name(
        transformers.models.auto.processing_auto.PROCESSOR_MAPPING_NAMES[config.model_type])
    return image_only_processor_class(cls).from_pretrained(path, trust_remote_code=trust_remote_code)


def image_only_processor_class(cls: type) -> type:
    """``cls`` (a processor class taking image_processor, tokenizer and video_processor) without its video part.

    transformers reads a processor's parts and saved options from its ``__init__``'s parameter names (the code
    object's, not an override of the signature), so the subclass's ``__init__`` is written with the family's own
    parameters less ``video_processor`` and runs the family's ``__init__`` with ``video_processor=None``. Chat
    templates render through transformers' common ``apply_chat_template`` (SmolVLM's own adds only video arguments,
    read from the video processor)."""
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name not in ("self", "video_processor") and p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: None if p.default is p.empty else p.default for p in params}
    names = [p.name for p in params]
    # generated so that the parameter names are the function's own (the code object transformers inspects)
    source = (f"def __init__(self, {', '.join(f'{n}=_defaults[{n!r}]' for n in names)}, **kwargs):\n"
              f"    _cls.__init__(self, {', '.join(f'{n}={n}' for n in names)}, video_processor=None, **kwargs)\n")
    namespace: dict[str, Any] = {"_defaults": defaults, "_cls": cls}
    exec(compile(source, f"<image-only {cls.__name__}>", "exec"), namespace)  # noqa: S102 - our own source
    return type(cls.__name__, (cls,), {"__init__": namespace["__init__"], "__module__": cls.__module__,
                                       "__doc__": cls.__doc__,
                                       "apply_chat_template": transformers.ProcessorMixin.apply_chat_template})


def load_configured_model(cfg: ModelConfig) -> LoadedModel:
    """The model ``cfg`` names, loaded as it says, on this process's device."""
    return load_model(cfg.name, dtype=cfg.dtype, device=process_device(cfg.device), device_map=cfg.device_map,
                      attn_implementation=cfg.attn_implementation, adapter=cfg.adapter,
                      trust_remote_code=cfg.trust_remote_code)


def _refuse_pickle_only(path: Path) -> None:
    has_st = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if has_pickle and not has_st:
        raise ModelLoadError(
            f"{path} holds only pickle weights (*.bin/*.pt); unforget loads safetensors only because pickle can "
            "run code. Convert them where you trust the source (model.save_pretrained(dir, safe_serialization=True))."
        )


def load_adapter(model: Any, adapter: str) -> Any:
    """Attach a peft adapter; an adapter trained on another base model is refused with a clear error."""
    from peft import PeftModel  # start-up time: peft takes seconds to import, only to apply an adapter

    cfg_path = Path(adapter) / "adapter_config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{adapter}: not a peft adapter folder (no adapter_config.json)")
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError) as exc:
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
        raise ModelLoadError(
            f"{adapter}: the LoRA adapter does not fit this model (adapter base: {base}): {exc}"
        ) from exc
