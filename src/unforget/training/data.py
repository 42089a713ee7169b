"""Training sets as instruction data, and the sampler that makes every epoch's order a function of (seed, epoch).

Every sample becomes ``(image, question, answer)`` and then an :class:`~unforget.training.examples.Example`
through :func:`~unforget.training.examples.build_example`, the one path by which unforget builds training
examples; a conversation sample (``llava-conversations``, ``sharegpt``, ``alpaca``) becomes one example with the
loss on every assistant turn (:func:`~unforget.training.examples.build_conversation_example`). Text-only and image
samples may be mixed in one run and one batch. Examples are built when the DataLoader asks for them, so a large set
is never held encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data import ImageDataset, Sample, load_dataset
from ..data.conversation import CONVERSATION_KEY, Conversation
from ..data.sampling import select, stratum_of
from ..errors import ConfigError, DataError
from ..models.loading import LoadedModel
from .config import ROUND_ROBIN, TrainDataConfig
from .examples import Example, build_conversation_example, build_example
from .mixing import SourceBatchSampler, mix_sources


@dataclass(frozen=True)
class TrainItem:
    """One instruction: the sample, the question asked and the answer taught; a conversation sample's whole
    conversation (every assistant turn taught), None for a one-turn instruction."""

    dataset: str
    sample: Sample
    question: str
    answer: str
    conversation: Conversation | None = None


def select_training_samples(ds: ImageDataset, cfg: TrainDataConfig) -> list[Sample]:
    """The split, filtered to ``cfg.classes`` when given, then ``cfg.limit`` of it drawn as ``cfg.sampling`` says
    (:func:`~unforget.data.sampling.select`)."""
    samples = ds.split(cfg.split)
    if cfg.classes is not None:
        if not ds.class_names:
            raise ConfigError(f"data.classes was given but dataset '{ds.name}' has no classes (task {ds.task})")
        bad = [c for c in cfg.classes if not 0 <= c < len(ds.class_names)]
        if bad:
            raise ConfigError(f"data.classes {bad} are outside dataset '{ds.name}''s classes "
                              f"0..{len(ds.class_names) - 1} ({', '.join(ds.class_names)})")
        keep = set(cfg.classes)
        samples = [s for s in samples if s.label in keep]
    return select(samples, cfg.limit, strategy=cfg.sampling, seed=cfg.sampling_seed, key=sampling_key(ds, cfg),
                  label_of=stratum_of(ds.task))


def sampling_key(ds: ImageDataset, cfg: TrainDataConfig) -> str:
    """What the training sample of ``ds`` is keyed on: the dataset and split (the seeded draws differ by split)."""
    return f"{ds.name}/{cfg.split}"


def question_of(ds: ImageDataset, sample: Sample, index: int, template: int | str) -> str:
    """The instruction of a training sample, asked as the evaluator asks it: classification and captions through
    the dataset's template; VQA as the sample's question followed by the same answer-format template
    (``ImageDataset.question_for``), so that training and evaluation prompts agree. A conversation sample: its
    first user turn (which may be empty beside the image: its turns are what is taught)."""
    if CONVERSATION_KEY in sample.meta:
        return sample.question or ""
    if sample.question and not ds.templates:
        return sample.question
    if not ds.templates:
        raise DataError(f"dataset '{ds.name}' has no prompt templates and sample {sample.id} no question: "
                        "add templates to its dataset YAML")
    if template == ROUND_ROBIN:
        return ds.question_for(sample, index % len(ds.templates))
    if not isinstance(template, int) or not -len(ds.templates) <= template < len(ds.templates):
        raise ConfigError(f"data.template {template} is out of range: dataset '{ds.name}' has "
                          f"{len(ds.templates)} templates")
    return ds.question_for(sample, template)


def training_items(cfg: TrainDataConfig) -> tuple[list[TrainItem], dict[str, ImageDataset]]:
    """All instructions of the training datasets, in dataset order (mixed as ``cfg.mix_strategy`` says), and the
    datasets by name."""
    per_dataset: list[list[TrainItem]] = []
    datasets: dict[str, ImageDataset] = {}
    sources: list[ImageDataset] = []
    for ref in cfg.datasets:
        ds = load_dataset(ref)
        datasets[ds.name] = ds
        sources.append(ds)
        samples = select_training_samples(ds, cfg)
        if not samples:
            raise DataError(f"dataset '{ds.name}' split '{cfg.split}' has no sample to train on"
                            + (f" with classes {cfg.classes}" if cfg.classes is not None else ""))
        per_dataset.append([TrainItem(ds.name, s, question_of(ds, s, i, cfg.template), ds.reference(s),
                                      s.meta.get(CONVERSATION_KEY))
                            for i, s in enumerate(samples)])

    def pick(index: int, items: Sequence[TrainItem], count: int) -> list[TrainItem]:
        """A source's share of a mix smaller than the source: drawn by the same rule as ``limit``, its round-robin
        templates counted over the share (as over a limit's sample: the task alone at a budget equals a limit)."""
        ds = sources[index]
        stratum = stratum_of(ds.task)
        chosen = select(items, count, strategy=cfg.sampling, seed=cfg.sampling_seed, key=sampling_key(ds, cfg),
                        label_of=lambda it: stratum(it.sample))
        return [replace(it, question=question_of(ds, it.sample, i, cfg.template)) for i, it in enumerate(chosen)]

    items = mix_sources(per_dataset, cfg, names=[source[0].dataset for source in per_dataset], pick=pick)
    return items, datasets


def processor_only() -> torch.nn.Module:
    """A stand-in for the model in the :class:`LoadedModel` the data pipeline uses: encoding needs the processor
    and a device (CPU here, so DataLoader workers never touch the GPU), and must not carry the weights along."""
    module = torch.nn.Module()
    module.register_parameter("anchor", torch.nn.Parameter(torch.zeros(0), requires_grad=False))
    return module


class InstructionDataset(torch.utils.data.Dataset):
    """Map-style dataset of :class:`Example`; images are read and encoded on access. ``lm`` needs only its
    processor and family (pass ``LoadedModel(processor_only(), processor, family, source)``)."""

    def __init__(self, lm: LoadedModel, items: Sequence[TrainItem]):
        self.lm = lm
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Example:
        item = self.items[index]
        image = item.sample.load_image(item.dataset) if item.sample.image is not None else None
        if item.conversation is not None:
            return build_conversation_example(self.lm, image, item.conversation)
        return build_example(self.lm, image, item.question, item.answer)


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A permutation drawn from (seed, epoch) alone: the same on every process and after a resume, and
    independent of torch's global generator (which dropout uses)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    @classmethod
    def for_items(cls, items: Sequence[TrainItem], cfg: TrainDataConfig, seed: int,
                  batch_size: int) -> torch.utils.data.Sampler[int]:
        """The sampler of a training set: this one, or with ``mix_by: batch`` and shuffling, one whose every
        batch comes from one dataset (:class:`~unforget.training.mixing.SourceBatchSampler`)."""
        if cfg.mix_by == "batch" and cfg.shuffle:
            names = list(dict.fromkeys(it.dataset for it in items))
            return SourceBatchSampler([names.index(it.dataset) for it in items], batch_size, seed)
        return cls(len(items), seed, cfg.shuffle)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        return iter(order.tolist())


def describe_items(items: Sequence[TrainItem]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for it in items:
        counts[it.dataset] = counts.get(it.dataset, 0) + 1
    return counts
