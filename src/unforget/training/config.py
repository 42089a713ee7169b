"""The config of ``unforget finetune`` (:class:`FinetuneConfig`) and the fine-tuning settings every study shares
(:class:`TrainSettings`, converted into a FinetuneConfig by one function)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ..data.sampling import SamplingStrategy
from ..errors import ConfigError
from ..models.config import ModelConfig
from .mixing import check_mixing
from .regularizer_registry import REGULARIZERS

ROUND_ROBIN = "round-robin"

LrScheduler = Literal["cosine", "linear", "constant"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]  # auto: bf16 where the GPU has it, else no


@dataclass
class TrainDataConfig:
    """Training data: datasets by name (``digits``), ``format:path`` (``jsonl:/data/vqa.jsonl``) or dataset YAML.

    Classification samples become instructions (the dataset's prompt template -> the class name), VQA samples
    (their question -> their answer), captions (the template -> the caption)."""

    datasets: list[str] = field(default_factory=lambda: ["digits"])
    split: str = "train"
    limit: int | None = None  # N samples per dataset (after the class filter), drawn as ``sampling`` says
    # stratified: a class-stratified sample seeded by sampling_seed (not the training seed, so every arm and seed
    # of a study trains on the same samples); head: the first N
    sampling: SamplingStrategy = "stratified"
    sampling_seed: int = 0
    template: int | str = 0  # index of the dataset's prompt template, or "round-robin" over all of them
    classes: list[int] | None = None  # keep only samples with these labels (classification sets)
    shuffle: bool = True
    # data-hybrid training (training/mixing.py; LLaMA-Factory's names): how the datasets are combined
    mix_strategy: Literal["concat", "interleave_under", "interleave_over"] = "concat"
    interleave_probs: list[float] | None = None  # each dataset's share of the mix (interleave_*); None: equal
    budget: int | None = None  # training examples per epoch after mixing; None: what the strategy gives
    mix_by: Literal["sample", "batch"] = "sample"  # batch: every batch comes from one dataset

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("data.datasets is empty: name at least one dataset (--datasets digits)")
        check_mixing(self)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit must be >= 1, got {self.limit}")
        if isinstance(self.template, str) and self.template != ROUND_ROBIN:
            if self.template.lstrip("-").isdigit():
                self.template = int(self.template)
            else:
                raise ConfigError(f"data.template must be a template index or '{ROUND_ROBIN}', got '{self.template}'")


@dataclass
class RegularizerConfig:
    """A penalty added to the training loss (training/regularizers.py: l2, ewc, lwf); ``name`` None: none."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the regularizer's options (strength, data, ...)

    def validate(self) -> None:
        if self.name:
            REGULARIZERS.get(self.name).parse_options(self.options)


@dataclass
class FinetuneConfig:
    """``unforget finetune``: one method on one or more datasets, checkpoints every epoch, resumable."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    method: str = "lora"  # projector | lora | full | partial (`unforget ls methods`)
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's options (r, alpha, preset, ...)
    lr: float | None = None  # None: the method's default (projector 1e-3, lora 2e-4, full/partial 2e-5)
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr_scheduler: LrScheduler = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # None or 0: no clipping (the norm is still checked)
    seed: int = 0
    mixed_precision: MixedPrecision = "auto"
    gradient_checkpointing: bool = False
    save_every_steps: int | None = None  # also checkpoint every N optimizer steps (checkpoints/step-N)
    log_every_steps: int = 10  # console log interval; train_log.jsonl gets every step
    num_workers: int = 0  # DataLoader workers
    # a frozen vision tower's output computed once per image and reused (models/feature_cache.py); speed only
    cache_vision_features: bool = True
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)  # ewc / l2 / lwf penalty
    out: str | None = None  # run folder; None: runs/finetune/<model>-<method>-<time>. An existing one resumes.

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.save_every_steps is not None and self.save_every_steps < 1:
            raise ConfigError(f"save_every_steps must be >= 1, got {self.save_every_steps}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")


# Keys whose change alters the trained weights: a run folder resumes only under the same values.
RESUME_KEYS = ("model.name", "model.dtype", "model.adapter", "data", "method", "method_options", "lr", "epochs",
               "max_steps", "batch_size", "grad_accum", "lr_scheduler", "warmup_ratio", "weight_decay",
               "max_grad_norm", "seed", "mixed_precision", "regularizer")


@dataclass
class TrainSettings:
    """How a study fine-tunes: every :class:`FinetuneConfig` setting that the study does not decide itself, under
    its ``train:`` key. The study decides the model, the datasets, the method, its options, the learning rate, the
    epochs, the seed and the output folder (per arm, per task, per sweep point), and passes them to
    :meth:`finetune_config`, the one conversion. A study's own defaults are a subclass that redefines fields; the
    defaults here are FinetuneConfig's (TrainDataConfig's for the data fields), except ``template``: every study
    trains on all of a dataset's prompt templates in turn."""

    # how the training samples are drawn from each dataset (TrainDataConfig)
    split: str = "train"
    limit: int | None = None  # training samples per dataset, drawn as `sampling` says; None: all
    sampling: SamplingStrategy = "stratified"  # seeded class-stratified (the same for every arm); head: the first N
    sampling_seed: int = 0
    template: int | str = ROUND_ROBIN
    classes: list[int] | None = None  # keep only samples with these labels (class-subset fine-tuning)
    shuffle: bool = True
    # the optimisation (FinetuneConfig)
    max_steps: int | None = None  # optimizer steps; overrides the epochs
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr_scheduler: LrScheduler = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    mixed_precision: MixedPrecision = "auto"
    gradient_checkpointing: bool = False
    save_every_steps: int | None = None
    log_every_steps: int = 10
    num_workers: int = 0
    cache_vision_features: bool = True  # a frozen vision tower runs once per image (models/feature_cache.py)

    def data_config(self, datasets: Sequence[str], **study_decided: Any) -> TrainDataConfig:
        """The training data of ``datasets``, drawn as these settings say; ``study_decided``: TrainDataConfig
        fields the study sets itself (a data-hybrid run's mixing and budget), overriding the settings."""
        drawn: dict[str, Any] = dict(split=self.split, limit=self.limit, sampling=self.sampling,
                                     sampling_seed=self.sampling_seed, template=self.template, classes=self.classes,
                                     shuffle=self.shuffle)
        return TrainDataConfig(datasets=list(datasets), **{**drawn, **study_decided})

    def finetune_config(self, *, model: ModelConfig, data: TrainDataConfig, method: str,
                        method_options: dict[str, Any] | None = None, lr: float | None = None, epochs: int,
                        seed: int, out: str, regularizer: RegularizerConfig | None = None) -> FinetuneConfig:
        """The FinetuneConfig of one fine-tuning run of a study: what the study decided, and these settings."""
        return FinetuneConfig(
            model=model, data=data, method=method, method_options=dict(method_options or {}), lr=lr, epochs=epochs,
            max_steps=self.max_steps, batch_size=self.batch_size, grad_accum=self.grad_accum,
            lr_scheduler=self.lr_scheduler, warmup_ratio=self.warmup_ratio, weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm, seed=seed, mixed_precision=self.mixed_precision,
            gradient_checkpointing=self.gradient_checkpointing, save_every_steps=self.save_every_steps,
            log_every_steps=self.log_every_steps, num_workers=self.num_workers,
            cache_vision_features=self.cache_vision_features,
            regularizer=regularizer if regularizer is not None else RegularizerConfig(), out=out,
        )


@dataclass
class MethodTrainSettings(TrainSettings):
    """The settings of a study that fine-tunes with one method throughout (continual, tailor): it also names the
    method, its options, the learning rate and the epochs under ``train:``."""

    method: str = "lora"  # `unforget ls methods`
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's options (r, alpha, preset, ...)
    lr: float | None = None  # None: the method's default
    epochs: int = 1
