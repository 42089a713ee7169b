"""Judge-free measures of language forgetting on text without images: the likelihood of the accepted answers of the
"text" set, and the perplexity of held-out prose. Both are computed by one teacher-forced pass through the model's
own chat template (prompt tokens masked), so they compare across epochs of one model.

The pass keeps one value per item (`LanguageItems`: each answer's and each held-out text's negative log-likelihood
and token count), so that the scores carry percentile bootstrap intervals over items (`language_estimates`) and a
fine-tuned model compares with its base model on the same items (`language_change`, paired). Everything but the
model pass is pure numpy: reports import this module without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data import load_dataset
from ..data.sampling import SamplingStrategy, select_split
from ..data.text import heldout_texts
from ..errors import DataError
from ..models.loading import LoadedModel
from ..models.prompting import build_prompt
from ..stats import Estimate, bootstrap_interval

TEXT_DATASET = "text"
N_RESAMPLES = 2000
SEED = 0


@dataclass
class LanguageScores:
    answer_logprob: float  # mean per-token log-probability of the reference answers of the text set
    heldout_perplexity: float  # exp(mean per-token negative log-likelihood) of the held-out prose
    n_answers: int
    n_heldout_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LanguageItems:
    """Per-item values of one teacher-forced pass: the text set's reference answers (by sample id) and the
    held-out texts (by position), each as a summed negative log-likelihood (nats) and its token count."""

    answer_ids: list[str]
    answer_nll: list[float]
    answer_tokens: list[int]
    heldout_nll: list[float]
    heldout_tokens: list[int]

    def scores(self) -> LanguageScores:
        answer_tokens, held_tokens = sum(self.answer_tokens), sum(self.heldout_tokens)
        return LanguageScores(answer_logprob=-sum(self.answer_nll) / max(1, answer_tokens),
                              heldout_perplexity=math.exp(sum(self.heldout_nll) / max(1, held_tokens)),
                              n_answers=len(self.answer_ids), n_heldout_tokens=held_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"answers": {"ids": list(self.answer_ids), "nll": [float(x) for x in self.answer_nll],
                            "tokens": [int(n) for n in self.answer_tokens]},
                "heldout": {"nll": [float(x) for x in self.heldout_nll],
                            "tokens": [int(n) for n in self.heldout_tokens]}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LanguageItems:
        """Inverse of `to_dict` (a language.jsonl row's ``items``)."""
        try:
            answers, held = data["answers"], data["heldout"]
            items = cls([str(i) for i in answers["ids"]], [float(x) for x in answers["nll"]],
                        [int(n) for n in answers["tokens"]], [float(x) for x in held["nll"]],
                        [int(n) for n in held["tokens"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"language scores: per-item values are malformed ({exc!r}); delete the language.jsonl "
                            "row and rerun the study to measure it again") from None
        if not len(items.answer_ids) == len(items.answer_nll) == len(items.answer_tokens) or \
                len(items.heldout_nll) != len(items.heldout_tokens):
            raise DataError("language scores: per-item lists of different lengths; delete the language.jsonl row and "
                            "rerun the study to measure it again")
        return items


@dataclass(frozen=True)
class LanguageEstimates:
    """The two scores with percentile bootstrap intervals over items (answers; held-out texts)."""

    answer_logprob: Estimate  # nats per answer token (higher: the answers are more likely)
    heldout_perplexity: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {"answer_logprob": self.answer_logprob.to_dict(),
                "heldout_perplexity": self.heldout_perplexity.to_dict()}


@dataclass(frozen=True)
class LanguageChange:
    """A model against its base on the same items, ``after - before``, with paired bootstrap intervals:
    ``answer_logprob`` below 0 and ``heldout_perplexity`` above 0 are the directions of forgetting."""

    answer_logprob: Estimate | None  # None: no answer scored in both
    heldout_perplexity: Estimate | None  # None: the held-out texts differ

    def to_dict(self) -> dict[str, Any]:
        return {"answer_logprob": self.answer_logprob.to_dict() if self.answer_logprob else None,
                "heldout_perplexity": self.heldout_perplexity.to_dict() if self.heldout_perplexity else None}


# ------------------------------------------------------------------------------------------------ intervals


def _mean_logprob(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return -nll.sum(-1) / tokens.sum(-1)


def _perplexity(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return np.exp(nll.sum(-1) / tokens.sum(-1))


def _ratio_estimate(statistic: Any, nll: Sequence[float], tokens: Sequence[int], confidence: float,
                    n_resamples: int, seed: int) -> Estimate:
    # the items are the unit: resampling whole answers (texts) keeps each one's tokens together
    return bootstrap_interval(statistic, np.asarray(nll, dtype=float), np.asarray(tokens, dtype=float),
                              n_resamples=n_resamples, confidence=confidence, seed=seed)


def language_estimates(items: LanguageItems, confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                       seed: int = SEED) -> LanguageEstimates:
    """Answer log-likelihood = -(total answer nll) / (total answer tokens) and held-out perplexity =
    exp(total nll / total tokens), each with a percentile bootstrap interval over items (fixed ``seed``)."""
    if not items.answer_ids or not items.heldout_nll:
        raise DataError("language scores need at least one text-set answer and one held-out text")
    return LanguageEstimates(
        answer_logprob=_ratio_estimate(_mean_logprob, items.answer_nll, items.answer_tokens, confidence,
                                       n_resamples, seed),
        heldout_perplexity=_ratio_estimate(_perplexity, items.heldout_nll, items.heldout_tokens, confidence,
                                           n_resamples, seed))


def _paired_change(statistic: Any, before: tuple[Sequence[float], Sequence[int]],
                   after: tuple[Sequence[float], Sequence[int]], confidence: float, n_resamples: int,
                   seed: int) -> Estimate:
    arrays = [np.asarray(a, dtype=float) for a in (*before, *after)]

    def delta(nll_b: np.ndarray, tok_b: np.ndarray, nll_a: np.ndarray, tok_a: np.ndarray) -> np.ndarray:
        return statistic(nll_a, tok_a) - statistic(nll_b, tok_b)

    return bootstrap_interval(delta, *arrays, n_resamples=n_resamples, confidence=confidence, seed=seed,
                              paired=True)


def language_change(before: LanguageItems, after: LanguageItems, confidence: float = 0.95,
                    n_resamples: int = N_RESAMPLES, seed: int = SEED) -> LanguageChange:
    """``after - before`` of both scores on the items measured in both (answers matched by sample id, held-out
    texts by position when both have the same number), each with a paired percentile bootstrap interval."""
    position = {i: k for k, i in enumerate(after.answer_ids)}
    shared = [(k, position[i]) for k, i in enumerate(before.answer_ids) if i in position]
    answer = None
    if shared:
        b = ([before.answer_nll[k] for k, _ in shared], [before.answer_tokens[k] for k, _ in shared])
        a = ([after.answer_nll[j] for _, j in shared], [after.answer_tokens[j] for _, j in shared])
        answer = _paired_change(_mean_logprob, b, a, confidence, n_resamples, seed)
    held = None
    if before.heldout_nll and len(before.heldout_nll) == len(after.heldout_nll):
        held = _paired_change(_perplexity, (before.heldout_nll, before.heldout_tokens),
                              (after.heldout_nll, after.heldout_tokens), confidence, n_resamples, seed)
    return LanguageChange(answer_logprob=answer, heldout_perplexity=held)


# ------------------------------------------------------------------------------------------------ the model pass


def _item_nll(lm: LoadedModel, pairs: Sequence[tuple[str, str]], batch_size: int) -> list[tuple[float, int]]:
    """Per pair: the summed negative log-likelihood of ``completion`` after its ``prefix`` (raw text), and the
    number of completion tokens scored."""
    tok = lm.tokenizer
    out: list[tuple[float, int]] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            rows, labels = [], []
            for prefix, completion in chunk:
                p = tok(prefix, add_special_tokens=False)["input_ids"]
                c = tok(completion, add_special_tokens=False)["input_ids"]
                rows.append(p + c)
                labels.append([-100] * len(p) + c)
            width = max(len(r) for r in rows)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=lm.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=lm.device)
            lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels], device=lm.device)
            logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = lab[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp_min(0), reduction="none")
            keep = target != -100
            sums = (nll * keep).sum(-1)
            counts = keep.sum(-1)
            out.extend((float(s), int(n)) for s, n in zip(sums.tolist(), counts.tolist()))
    return out


def language_items(lm: LoadedModel, *, dataset: str = TEXT_DATASET, limit: int | None = None,
                   batch_size: int = 8, sampling: SamplingStrategy = "stratified", seed: int = 0) -> LanguageItems:
    """The per-item pass: each test prompt of ``dataset`` (a "text" set reference) with its reference answer
    through the chat template, and each held-out text after the tokenizer's BOS. ``limit`` prompts are drawn as
    ``sampling`` says (a text set has no classes: a seeded uniform sample, the same for every model, which is what
    the paired comparison with the base model needs; ``head``: the first N)."""
    ds = load_dataset(dataset)
    samples, _ = select_split(ds, "test", limit, strategy=sampling, seed=seed)
    pairs = [(build_prompt(lm, s.question, with_image=False), ds.reference(s)) for s in samples]
    answers = _item_nll(lm, pairs, batch_size)
    bos = lm.tokenizer.bos_token or ""
    held = _item_nll(lm, [(bos, t) for t in heldout_texts()], batch_size)
    return LanguageItems(answer_ids=[s.id for s in samples], answer_nll=[s for s, _ in answers],
                         answer_tokens=[n for _, n in answers], heldout_nll=[s for s, _ in held],
                         heldout_tokens=[n for _, n in held])


def language_scores(lm: LoadedModel, *, limit: int | None = None, batch_size: int = 8,
                    sampling: SamplingStrategy = "stratified", seed: int = 0) -> LanguageScores:
    """Answer log-likelihood on the "text" set's test prompts (through the chat template) and held-out perplexity."""
    return language_items(lm, limit=limit, batch_size=batch_size, sampling=sampling, seed=seed).scores()
