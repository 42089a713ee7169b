"""Which model a command or study loads, and how: the one config that evaluation, training and every study share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Which model and how to load it. ``name``: zoo name (tiny-llava), local HF folder, or hub id."""

    name: str = "tiny-llava"
    dtype: str = "auto"  # auto (bf16 on capable GPUs, fp32 on CPU) | float32 | bfloat16 | float16
    device: str = "auto"
    device_map: str | None = None  # "auto": spread a model larger than one device (accelerate)
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2
    adapter: str | None = None  # peft adapter folder applied on top
    trust_remote_code: bool = False
