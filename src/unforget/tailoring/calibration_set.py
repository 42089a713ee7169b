"""Calibration batches for Model Tailor from a dataset: N training instructions as HF batches (drawn as a training
``limit`` draws them: a seeded class-stratified sample by default).

Built by the one path every trainer in unforget uses (:func:`~unforget.training.data.training_items`,
:func:`~unforget.training.examples.build_example`, :func:`~unforget.training.examples.collate_examples`), so the
calibration loss is the fine-tuning loss: the model's chat template, loss on the answer tokens only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ModelLoadError
from ..models.loading import LoadedModel, load_processor, resolve_model_path
from ..training.config import TrainDataConfig
from ..training.data import processor_only, training_items
from ..training.examples import build_example, collate_examples

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def processor_model(base: str | Path) -> LoadedModel:
    """A :class:`LoadedModel` holding the base model's processor only (what building examples needs)."""
    # start-up time: the tailoring registry imports every module of unforget.tailoring; transformers' processor
    # classes load only when calibration batches are built
    from transformers import AutoConfig

    path = resolve_model_path(str(base))
    try:
        family = getattr(AutoConfig.from_pretrained(path), "model_type", "unknown")
        processor = load_processor(path, family)  # the family's processor as load_model builds it
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"{path}: cannot load the processor to build calibration batches ({exc})") from exc
    tok = getattr(processor, "tokenizer", None)
    if tok is not None and tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(processor_only(), processor, family, path)


def calibration_batches(
    lm: LoadedModel,
    dataset: str,
    *,
    split: str = "train",
    limit: int = 64,
    batch_size: int = 4,
    template: int | str = 0,
    sampling: str = "stratified",
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """``limit`` samples of ``dataset``'s ``split`` (drawn as ``sampling`` says) as instruction batches of
    ``batch_size`` (input_ids, attention_mask, labels, pixel_values ...) for ``tailor(calib_batches=...)``."""
    if limit < 1 or batch_size < 1:
        raise ConfigError(f"calibration needs limit >= 1 and batch_size >= 1, got limit={limit}, "
                          f"batch_size={batch_size}")
    data = TrainDataConfig(datasets=[dataset], split=split, limit=limit, sampling=sampling,  # type: ignore[arg-type]
                           template=template, shuffle=False)
    data.validate()
    items, _ = training_items(data)
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = []
    label = f"calibration batches ({dataset})"
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        examples = [build_example(lm, it.sample.load_image(it.dataset) if it.sample.image is not None else None,
                                  it.question, it.answer) for it in chunk]
        batches.append(collate_examples(examples, pad_token_id=pad_id))
        if progress:
            progress(label, min(start + batch_size, len(items)), len(items))
    log.info("%d calibration batches of up to %d samples from %s/%s", len(batches), batch_size, dataset, split)
    return batches
