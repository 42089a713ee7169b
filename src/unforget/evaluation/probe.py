"""The judge-free forgetting probe: how far has the model's first answer token moved from the base model's?

On a fixed probe set (``limit`` samples of each chosen dataset's split drawn by ``probe.sampling``, a seeded
class-stratified sample by default; image + prompt as the evaluator builds them), one forward per sample gives the
next-token distribution at the answer position. Against the base model's distributions, stored once as
safetensors, two numbers per sample:

- ``KL(base || current)`` = sum_v p_base(v) (log p_base(v) - log p_current(v)): 0 for the unchanged model, growing
  as fine-tuning moves the answer distribution. No generation, no judge, no parsing - so it cannot be fooled by
  a format change or a judge's mistakes, and it is cheap enough for every epoch.
- the probability mass on the fine-tuning set's label tokens (the first token of each of its class names, each token
  counted once): how much the model wants to answer any question with a fine-tuning label (EMT's hallucination).

Batches go through the same prompt and encode path as generation (`build_prompt`, `encode_batch`, left padding, so
the last position is the answer position of every row).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from ..data import load_dataset
from ..data.sampling import SamplingStrategy, select_split
from ..errors import BadSampleError, DataError
from ..models.loading import LoadedModel
from ..models.prompting import build_prompt, encode_batch
from ..runs import atomic_write_bytes
from ..stats import Estimate, bootstrap_interval
from .config import ProbeConfig
from .ranking import TREE_FAMILIES, candidate_token_ids

log = logging.getLogger(__name__)

BASE_FILE = "probe_base.safetensors"
FORMAT_VERSION = "1"
RESAMPLES = 1000


@dataclass
class ProbeSample:
    key: str  # "<dataset>/<sample id>": what the stored base distributions are matched by
    dataset: str
    question: str
    image: Image.Image | None


@dataclass
class ProbeDatasetResult:
    n: int
    kl: float  # mean over the dataset's probe samples
    label_mass: float | None
    base_label_mass: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "kl": self.kl, "label_mass": self.label_mass, "base_label_mass": self.base_label_mass}


@dataclass
class ProbeResult:
    """One measurement. ``kl`` / ``label_mass``: means over all probe samples with bootstrap intervals."""

    n: int
    kl: Estimate
    label_mass: Estimate | None
    base_label_mass: float | None
    by_dataset: dict[str, ProbeDatasetResult] = field(default_factory=dict)
    label_set: str | None = None
    label_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "kl": self.kl.to_dict(),
                "label_mass": self.label_mass.to_dict() if self.label_mass else None,
                "base_label_mass": self.base_label_mass, "label_set": self.label_set,
                "label_tokens": self.label_tokens, "by_dataset": {d: r.to_dict() for d, r in self.by_dataset.items()}}


# ------------------------------------------------------------------------------------------------ pure functions


def kl_divergence(base_logp: torch.Tensor, current_logp: torch.Tensor) -> torch.Tensor:
    """Per row: KL(base || current) in nats, from log-probabilities of shape (N, V); float64 for the sum."""
    if base_logp.shape != current_logp.shape:
        raise DataError(f"probe distributions differ in shape: base {tuple(base_logp.shape)}, current "
                        f"{tuple(current_logp.shape)} (a resized vocabulary?); delete {BASE_FILE} to start over")
    b, c = base_logp.double(), current_logp.double()
    terms = torch.where(b > -torch.inf, b.exp() * (b - c), torch.zeros_like(b))  # 0 * log 0 = 0
    return terms.sum(-1).clamp(min=0.0)  # rounding can leave -1e-16 for identical rows


def label_mass(logp: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Per row: the probability on ``token_ids`` (each distinct token counted once)."""
    ids = sorted(set(int(t) for t in token_ids))
    if not ids:
        return torch.zeros(logp.shape[0], dtype=torch.float64)
    return logp[:, ids].double().exp().sum(-1)


def label_token_ids(lm: LoadedModel, class_names: Sequence[str]) -> list[int]:
    """The first token the model would emit for each class name (the convention of rank mode), deduplicated."""
    firsts = [seq[0] for seq in candidate_token_ids(lm, list(class_names), with_end=False) if seq]
    return sorted(set(firsts))


def mean_estimate(values: torch.Tensor, confidence: float = 0.95) -> Estimate:
    arr = values.double().cpu().numpy()
    return bootstrap_interval(lambda a: a.mean(-1), arr, n_resamples=RESAMPLES, confidence=confidence, seed=0)


# --------------------------------------------------------------------------------------------------- the model


def probe_samples(datasets: Sequence[str], split: str, limit: int, template: int = 0,
                  sampling: SamplingStrategy = "stratified", seed: int = 0) -> list[ProbeSample]:
    """The fixed probe set: ``limit`` samples of each dataset's split drawn as ``sampling`` says (caption sets
    included: the probe needs no reference); an unreadable one is left out with a warning, not replaced, so the
    set stays the one the seed names."""
    out: list[ProbeSample] = []
    for ref in datasets:
        ds = load_dataset(ref)
        chosen, _ = select_split(ds, split, limit, strategy=sampling, seed=seed)
        for s in chosen:
            try:
                image = s.load_image(ds.name) if s.image is not None else None
            except BadSampleError as exc:
                log.warning("probe: %s left out (%s)", s.id, exc)
                continue
            out.append(ProbeSample(f"{ds.name}/{s.id}", ds.name, ds.question_for(s, template), image))
    if not out:
        raise DataError(f"the probe set is empty: no readable sample in split '{split}' of {', '.join(datasets)}")
    return out


@torch.inference_mode()
def next_token_logprobs(lm: LoadedModel, samples: Sequence[ProbeSample], batch_size: int = 8) -> torch.Tensor:
    """(N, V) float32 log-probabilities of the first answer token, on the CPU, in the order of ``samples``."""
    prompts = [build_prompt(lm, s.question, with_image=s.image is not None) for s in samples]
    rows: list[torch.Tensor | None] = [None] * len(samples)
    # a batch never mixes image and text-only samples (encode_batch's rule)
    groups = [[i for i, s in enumerate(samples) if s.image is not None],
              [i for i, s in enumerate(samples) if s.image is None]]
    for group in groups:
        for start in range(0, len(group), batch_size):
            idx = group[start : start + batch_size]
            enc = encode_batch(lm, [samples[i].image for i in idx], [prompts[i] for i in idx])
            logits = _last_logits(lm, enc)
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(idx):
                rows[i] = logp[row]
    return torch.stack([r for r in rows if r is not None])


def _last_logits(lm: LoadedModel, enc: dict[str, Any]) -> torch.Tensor:
    extra: dict[str, Any] = {}
    if lm.family in TREE_FAMILIES:
        # positions counted from each row's first real token, as generate() does: a row's distribution must not
        # depend on how much left padding its batch needed (families with 3-D M-RoPE positions build their own)
        extra["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    try:
        out = lm.model(**enc, **extra, logits_to_keep=1)
    except TypeError:  # a forward without logits_to_keep: all positions, then the last
        out = lm.model(**enc, **extra)
    return out.logits[:, -1]


# ------------------------------------------------------------------------------------------------ base storage


def save_base(path: str | Path, logp: torch.Tensor, keys: Sequence[str], meta: dict[str, str]) -> None:
    """The base distributions as safetensors: tensor ``logprobs`` (N, V); the sample keys in the metadata."""
    metadata = {"format": FORMAT_VERSION, "keys": json.dumps(list(keys)), **{k: str(v) for k, v in meta.items()}}
    atomic_write_bytes(path, save_safetensors({"logprobs": logp.float().contiguous()}, metadata=metadata))


def load_base(path: str | Path) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            logp = fh.get_tensor("logprobs")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DataError(f"{path}: cannot read the stored base distributions ({exc}); delete it to recompute it from "
                        "the base model") from exc
    try:
        keys = json.loads(meta.pop("keys"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: no probe sample keys in the metadata; delete it to recompute it") from exc
    return logp, keys, meta


# ---------------------------------------------------------------------------------------------------- the probe


class ForgettingProbe:
    """Holds the probe set and the base distributions; ``measure(lm)`` compares a model with the base.

    ``datasets``: the probe datasets when ``config.datasets`` is empty. ``label_set``: the dataset whose class names'
    first tokens count as label tokens when ``config.label_set`` is None (the fine-tuning set); None: no label mass.
    """

    def __init__(self, config: ProbeConfig, datasets: Sequence[str] = (), label_set: str | None = None):
        self.config = config
        self.datasets = list(config.datasets or datasets)
        if not self.datasets:
            raise DataError("the forgetting probe needs at least one dataset (probe.datasets)")
        self.label_set = config.label_set or label_set
        self._samples: list[ProbeSample] | None = None
        self.base_logp: torch.Tensor | None = None
        self.label_tokens: list[int] = []

    @property
    def samples(self) -> list[ProbeSample]:
        if self._samples is None:
            c = self.config
            self._samples = probe_samples(self.datasets, c.split, c.limit, c.template, c.sampling, c.seed)
        return self._samples

    def keys(self) -> list[str]:
        return [s.key for s in self.samples]

    def _label_tokens(self, lm: LoadedModel) -> list[int]:
        if self.label_set is None:
            return []
        names = load_dataset(self.label_set).class_names
        if not names:
            log.warning("probe: label set '%s' has no class names; no label mass", self.label_set)
            return []
        return label_token_ids(lm, names)

    def prepare(self, lm: LoadedModel, path: str | Path | None = None) -> None:
        """Load the base distributions from ``path`` or compute them with ``lm`` (the base model) and store them
        there. A stored file for another probe set is an error (it would compare different samples)."""
        self.label_tokens = self._label_tokens(lm)
        if path is not None and Path(path).is_file():
            logp, keys, _ = load_base(path)
            if keys != self.keys():
                raise DataError(f"{path} holds base distributions of another probe set ({len(keys)} samples, "
                                f"{len(self.keys())} now: the probe datasets, split, limit or sampling changed); "
                                "delete it to recompute it from the base model")
            self.base_logp = logp
            return
        self.base_logp = next_token_logprobs(lm, self.samples, self.config.batch_size)
        if path is not None:
            save_base(path, self.base_logp, self.keys(), {"model": lm.source, "label_set": self.label_set or "",
                                                          "split": self.config.split})

    def measure(self, lm: LoadedModel, confidence: float = 0.95) -> ProbeResult:
        if self.base_logp is None:
            raise DataError("the probe has no base distributions: call prepare(base_model, path) first")
        current = next_token_logprobs(lm, self.samples, self.config.batch_size)
        return probe_result(self.base_logp, current, [s.dataset for s in self.samples], self.label_tokens,
                            self.label_set, confidence)


def probe_result(base_logp: torch.Tensor, current_logp: torch.Tensor, datasets: Sequence[str],
                 label_tokens: Sequence[int], label_set: str | None, confidence: float = 0.95) -> ProbeResult:
    """The probe's figures from base and current log-probabilities (rows labelled with their dataset)."""
    kl = kl_divergence(base_logp, current_logp)
    mass = label_mass(current_logp, label_tokens) if label_tokens else None
    base_mass = label_mass(base_logp, label_tokens) if label_tokens else None
    names = np.array(list(datasets))
    by_dataset = {}
    for d in dict.fromkeys(datasets):
        rows = torch.from_numpy(np.nonzero(names == d)[0])
        by_dataset[d] = ProbeDatasetResult(
            n=len(rows), kl=float(kl[rows].mean()),
            label_mass=float(mass[rows].mean()) if mass is not None else None,
            base_label_mass=float(base_mass[rows].mean()) if base_mass is not None else None)
    return ProbeResult(n=len(kl), kl=mean_estimate(kl, confidence),
                       label_mass=mean_estimate(mass, confidence) if mass is not None else None,
                       base_label_mass=float(base_mass.mean()) if base_mass is not None else None,
                       by_dataset=by_dataset, label_set=label_set, label_tokens=list(label_tokens))
