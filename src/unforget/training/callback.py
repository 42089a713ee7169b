"""``ForgettingCallback``: measure forgetting inside your own transformers ``Trainer`` loop.

    from unforget.training.callback import ForgettingCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate,
                      callbacks=[ForgettingCallback(processor, ["digits", "shapes"], every_steps=200,
                                                    log_file="runs/my-ft/forgetting.jsonl")])

It evaluates the chosen datasets with :func:`unforget.evaluation.evaluator.evaluate` at the start of training and
then every N steps and/or epochs, on the main process, and records each dataset's accuracy and its forgetting: the
drop from the first evaluation. Records go to ``state.log_history`` (so they are in ``trainer_state.json``), to the
optional JSONL file and to the python log. The model is put back in training mode and the RNG state restored after
each evaluation, so training goes on exactly as it would without the callback.

With ``probe=ProbeConfig(label_set="digits")`` it also measures the judge-free forgetting probe
(:mod:`unforget.evaluation.probe`) at each evaluation: ``probe/kl`` is KL(first || current) of the next-token
distribution at the answer position, averaged over the probe samples, where "first" is the model at the first
evaluation (the start of training with ``eval_at_start``); ``probe/label_mass`` is the probability on the label set's
first tokens. The first distributions are kept in ``probe_base_file`` (default: beside ``log_file``) so that a
resumed training compares with the same base.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from ..evaluation.config import EvalConfig, ProbeConfig
from ..evaluation.evaluator import evaluate
from ..evaluation.probe import ForgettingProbe
from ..models.loading import LoadedModel
from ..runs import JsonlAppender
from .checkpoints import capture_rng, restore_rng

log = logging.getLogger(__name__)


class ForgettingCallback(TrainerCallback):
    """Evaluate ``datasets`` during training; log accuracy and forgetting (first accuracy - current accuracy).

    ``processor``: the model's processor (the Trainer does not hold it). ``every_steps`` / ``every_epochs``: when
    to evaluate (either or both). ``eval_config``: evaluation settings (split, mode, judges, batch size...);
    ``datasets`` and ``limit`` given here override its fields. ``log_file``: a JSONL file to append records to.
    """

    def __init__(
        self,
        processor: Any,
        datasets: Sequence[str],
        *,
        every_steps: int | None = None,
        every_epochs: int | None = 1,
        eval_at_start: bool = True,
        limit: int | None = None,
        eval_config: EvalConfig | None = None,
        log_file: str | Path | None = None,
        family: str | None = None,
        probe: ProbeConfig | None = None,
        probe_base_file: str | Path | None = None,
    ):
        if not datasets:
            raise ValueError("ForgettingCallback needs at least one dataset to evaluate")
        cfg = eval_config or EvalConfig()
        self.eval_config = dataclasses.replace(cfg, datasets=list(datasets), limit=limit if limit is not None
                                               else cfg.limit)
        self.processor = processor
        self.every_steps = every_steps
        self.every_epochs = every_epochs
        self.eval_at_start = eval_at_start
        self.log_file = Path(log_file) if log_file else None
        self.family = family
        self.probe_config = probe if probe is not None and probe.enabled else None
        if probe_base_file is None and self.log_file is not None:
            probe_base_file = self.log_file.with_name(f"{self.log_file.stem}.probe_base.safetensors")
        self.probe_base_file = Path(probe_base_file) if probe_base_file else None
        self._probe: Any = None
        self.first: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self._last_step: int | None = None

    # ------------------------------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.eval_at_start and model is not None:
            self.evaluate_now(model, state, "start")

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.every_steps and state.global_step % self.every_steps == 0 and model is not None:
            self.evaluate_now(model, state, "step")

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        epoch = int(round(state.epoch or 0))
        if self.every_epochs and epoch % self.every_epochs == 0 and model is not None:
            self.evaluate_now(model, state, "epoch")

    # ------------------------------------------------------------------------------------------------ work
    def evaluate_now(self, model: Any, state: Any, event: str) -> dict[str, Any] | None:
        """Evaluate now (main process only); returns the record, or None on other processes / a repeated step."""
        if not getattr(state, "is_world_process_zero", True) or self._last_step == state.global_step and self.first:
            return None
        self._last_step = state.global_step
        family = self.family or getattr(getattr(model, "config", None), "model_type", "llava")
        lm = LoadedModel(model, self.processor, family, source="trainer")
        was_training = model.training
        tensors, meta = capture_rng()
        model.eval()
        try:
            result = evaluate(self.eval_config, lm=lm)
            probed = self._measure_probe(lm)
        finally:
            if was_training:
                model.train()
            restore_rng(tensors, meta)
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "event": event}
        for name in self.eval_config.datasets:
            accuracy = result.accuracy(name)
            self.first.setdefault(name, accuracy)
            record[f"forgetting/{name}/accuracy"] = accuracy
            record[f"forgetting/{name}/drop"] = self.first[name] - accuracy
        if probed is not None:
            record["probe/kl"] = probed.kl.value
            record["probe/kl_low"], record["probe/kl_high"] = probed.kl.low, probed.kl.high
            if probed.label_mass is not None:
                record["probe/label_mass"] = probed.label_mass.value
            for name, figures in probed.by_dataset.items():
                record[f"probe/{name}/kl"] = figures.kl
        self.history.append(record)
        state.log_history.append(record)
        if self.log_file is not None:
            with JsonlAppender(self.log_file) as out:
                out.write(record)
        log.info("step %s: %s", state.global_step, ", ".join(
            f"{n} accuracy {record[f'forgetting/{n}/accuracy']:.3f} (forgetting {record[f'forgetting/{n}/drop']:+.3f})"
            for n in self.eval_config.datasets))
        return record

    def _measure_probe(self, lm: LoadedModel) -> Any:
        """The probe against the first evaluation's distributions (computed now when there are none yet)."""
        if self.probe_config is None:
            return None
        if self._probe is None:
            self._probe = ForgettingProbe(self.probe_config, self.eval_config.datasets)
            self._probe.prepare(lm, self.probe_base_file)
        return self._probe.measure(lm)
