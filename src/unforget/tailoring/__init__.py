"""Model Tailor and the weight-merging baselines: keep the pre-trained model, graft part of the fine-tuning.

    from unforget.tailoring import tailor, write_tailored, apply_patch

    result = tailor("llava-base/", ["run/finetuned/"], calib_batches, sparsity=0.1)
    write_tailored(result, "run/tailored/")                   # a HF model folder
    write_tailored(result, "run/", format="patch")            # run/patch.safetensors
    apply_patch("llava-base/", "run/patch.safetensors", "run/tailored-again/")

Methods (``TAILORING_METHODS``): model-tailor, magnitude, average, task-arithmetic, ties, dare.
"""

from .base import DEFAULT_MODULES, TAILORING_METHODS, StageSeconds, TailoringMethod, TensorStats, considered_keys
from .checkpoints import Checkpoint, LoraCheckpoint, fingerprint, open_checkpoint
from .patch import TailorPatch, TensorPatch, apply_patch
from .pipeline import TailorResult, tailor, write_tailored

__all__ = [
    "DEFAULT_MODULES",
    "TAILORING_METHODS",
    "Checkpoint",
    "LoraCheckpoint",
    "StageSeconds",
    "TailorPatch",
    "TailorResult",
    "TailoringMethod",
    "TensorPatch",
    "TensorStats",
    "apply_patch",
    "considered_keys",
    "fingerprint",
    "open_checkpoint",
    "tailor",
    "write_tailored",
]
