"""Fine-tuning: the loop (:func:`finetune`), its methods (projector, lora, full, partial) and checkpoints.

    from unforget.training import FinetuneConfig, finetune

    result = finetune(FinetuneConfig(method="lora", data=TrainDataConfig(datasets=["digits"]), epochs=2))

``ForgettingCallback`` (``unforget.training.callback``) brings unforget's evaluation into a transformers Trainer.
"""

from .checkpoints import load_finetuned
from .config import FinetuneConfig, TrainDataConfig
from .methods.base import METHODS
from .trainer import FinetuneResult, finetune

__all__ = ["METHODS", "FinetuneConfig", "FinetuneResult", "TrainDataConfig", "finetune", "load_finetuned"]
