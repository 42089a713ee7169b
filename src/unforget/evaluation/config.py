"""Configs of evaluation (the model's own config is :class:`unforget.models.config.ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..data.sampling import SamplingStrategy
from ..errors import ConfigError
from ..models.config import ModelConfig


@dataclass
class EvalConfig:
    """``unforget eval``: the MLLM as an image classifier / VQA model on one or more datasets."""

    model: ModelConfig = field(default_factory=ModelConfig)
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    split: str = "test"
    mode: Literal["generate", "rank"] = "generate"
    judges: list[str] = field(default_factory=lambda: ["exact"])  # the first decides; the others are compared
    judge_options: dict[str, dict] = field(default_factory=dict)  # judge name -> constructor options
    template: int = 0  # index into the dataset's prompt templates (0 = the EMT-style one)
    limit: int | None = None  # N samples per dataset, drawn as ``sampling`` says (None: all)
    # stratified: a class-stratified sample seeded by ``seed`` (the same for every model, epoch and arm); head: first N
    sampling: SamplingStrategy = "stratified"
    batch_size: int = 16
    max_new_tokens: int = 16
    caption_max_new_tokens: int = 48  # captioning sets (task caption) need whole sentences
    rank_normalise: Literal["sum", "mean"] = "sum"  # rank mode: sum or length-normalised log-likelihood
    # generate mode: also rank the class names by likelihood (one extra prefix pass per sample) and keep it in each
    # record under "rank", for the format-vs-knowledge split (exact judge wrong but the ranking right = format broke)
    also_rank: bool = False
    leak_labels: list[str] = field(default_factory=list)  # datasets whose labels count as hallucinated answers
    skip_bad: bool = False  # record unreadable samples as skipped instead of stopping
    baselines: list[str] = field(default_factory=list)  # vision-encoder baselines: zero-shot, linear-probe
    encoder: str | None = None  # CLIP folder for zero-shot (default: <model>/encoder when shipped)
    probe_train_limit: int = 2000  # train samples for the linear probe (drawn as ``sampling`` says)
    seed: int = 0  # of the samples a limit draws
    out: str | None = None  # run folder; None: runs/eval/<model>-<time>

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("eval needs at least one dataset (--datasets digits,shapes)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        bad = set(self.baselines) - {"zero-shot", "linear-probe"}
        if bad:
            raise ConfigError(f"unknown baseline(s) {sorted(bad)}; use zero-shot and/or linear-probe")
        if not self.judges:
            raise ConfigError("judges must name at least one judge (e.g. exact)")


@dataclass
class ProbeConfig:
    """The judge-free forgetting probe (:mod:`unforget.evaluation.probe`): on a fixed set of probe samples, the
    KL divergence of the model's next-token distribution at the answer position from the base model's, and the
    probability it puts on the fine-tuning set's label tokens."""

    enabled: bool = True
    datasets: list[str] = field(default_factory=list)  # empty: the evaluated datasets
    label_set: str | None = None  # whose class names' first tokens are "label tokens"; None: the fine-tuning set
    split: str = "test"
    limit: int = 32  # probe samples per dataset, drawn as ``sampling`` says: a seeded sample, so the set never changes
    sampling: SamplingStrategy = "stratified"  # head: the first N of the split
    seed: int = 0
    template: int = 0
    batch_size: int = 8

    def validate(self) -> None:
        if self.limit < 1:
            raise ConfigError(f"probe.limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"probe.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class LanguageConfig:
    """Judge-free language scores in a study (:mod:`unforget.evaluation.language`): after every evaluation, the
    log-likelihood of the "text" set's reference answers and the perplexity of held-out prose, with bootstrap
    intervals over items. Measured only where a "text" set is among the evaluated datasets."""

    enabled: bool = True
    limit: int | None = None  # text-set answers scored (a seeded uniform sample of the test split); None: all
    sampling: SamplingStrategy = "stratified"  # a text set has no classes: stratified is uniform; head: first N
    seed: int = 0
    batch_size: int = 8

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"language.limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"language.batch_size must be >= 1, got {self.batch_size}")
