"""The training loss: next-token cross-entropy on the answer tokens, with vocabulary logits computed only there.

A model called with ``labels`` projects every position of the sequence onto the vocabulary and then ignores all
but the answer's: a LLaVA prompt is hundreds of image and text tokens, an answer a handful. Asking the model for
the logits of the positions that predict an answer token only (``logits_to_keep`` as a tensor of positions, which
transformers' generation models take) and taking the cross-entropy there gives the same loss - the mean over the
answer tokens, computed by the model's own loss function (transformers' ``ForCausalLMLoss``, in float32) - without
the rest of the LM-head matmul, its backward, and the (batch x length x vocabulary) float32 logits and their
gradient in memory.

The loss of an optimizer step is the sum over all its answer tokens divided by their number, however the step's
samples are split over accumulation steps and processes (transformers' ``num_items_in_batch``): a mean of
per-batch means would weigh the tokens of a batch of short answers more than those of a batch of long ones.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Mapping

import torch

from .examples import IGNORE_INDEX

log = logging.getLogger(__name__)


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions ``t`` whose logits predict a labelled token (``labels[:, t + 1]`` not ignored) in any
    row of the batch, ascending."""
    return (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(1)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the (peft-wrapped, accelerate-unwrapped) model's forward has a ``logits_to_keep`` argument."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_token_count(labels: torch.Tensor) -> torch.Tensor:
    """The number of answer tokens the loss of a batch is taken over (labelled tokens after the first position: the
    first is predicted by nothing), as a tensor on the labels' device."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


class AnswerLoss:
    """``loss, outputs = AnswerLoss(unwrapped, answer_logits_only)(model, batch)``: the mean over the batch's answer
    tokens; :meth:`summed` gives their sum, which the trainer divides by the answer tokens of the whole optimizer
    step (over its accumulation steps and processes), so that a token weighs the same whatever batch it is in.

    With ``answer_logits_only`` (and a model that takes ``logits_to_keep``) ``outputs.logits`` holds the kept
    positions only; without it the model computes its own loss from ``labels`` and every position's logits, which
    is what a consumer of the full logits (the LwF regularizer) needs."""

    def __init__(self, unwrapped_model: Any, answer_logits_only: bool = True):
        self.enabled = answer_logits_only and takes_logits_to_keep(unwrapped_model)
        self.checked = False

    def __call__(self, model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        if not self.enabled:
            outputs = model(**batch, use_cache=False)
            return outputs.loss, outputs
        labels = batch["labels"]
        positions = answer_positions(labels)
        targets = labels[:, positions + 1]
        # the model's own loss function on the kept logits: ``shift_labels`` are the targets already aligned with
        # them (transformers' way to pass pre-shifted labels); ``labels`` only has to be there to ask for a loss
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"}, labels=targets, shift_labels=targets,
                        logits_to_keep=positions, use_cache=False)
        if not self.checked:
            # once: a family that keeps logits only by count, or does not hand shift_labels to its loss function
            # (it would shift the targets once more, silently), gets its own loss over every position instead
            self.checked = True
            if not self._kept_loss_is_right(outputs, targets):
                log.info("%s cannot compute its loss on kept positions; computing it over every position",
                         type(model).__name__)
                self.enabled = False
                return self(model, batch)
        return outputs.loss, outputs

    def summed(self, model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """``(sum of the cross-entropy over the answer tokens of the batch, outputs)``, in float32; 0 (still a
        function of every weight the forward used, so that DDP finds their gradients) for a batch without any."""
        loss, outputs = self(model, batch)
        count = answer_token_count(batch["labels"])
        if not bool(count):
            return outputs.logits.float().sum() * 0.0, outputs
        # the model's loss is the mean over these tokens: times their number is their sum
        return loss.float() * count.to(loss.device), outputs

    @staticmethod
    def _kept_loss_is_right(outputs: Any, targets: torch.Tensor) -> bool:
        if outputs.loss is None or outputs.logits.shape[:2] != targets.shape:
            return False
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(outputs.logits.float().flatten(0, 1),
                                                         targets.flatten().to(outputs.logits.device),
                                                         ignore_index=IGNORE_INDEX)
            return bool(torch.allclose(outputs.loss.float(), expected, rtol=1e-4, atol=1e-6, equal_nan=True))
