"""Judge-free measures of language forgetting on text without images: the likelihood of the accepted answers of the
"text" set, and the perplexity of held-out prose. Both are computed by one teacher-forced pass through the model's
own chat template (prompt tokens masked), so they compare across epochs of one model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..models.loading import LoadedModel


@dataclass
class LanguageScores:
    answer_logprob: float  # mean per-token log-probability of the reference answers of the text set
    heldout_perplexity: float  # exp(mean per-token negative log-likelihood) of the held-out prose
    n_answers: int
    n_heldout_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def _token_nll(lm: LoadedModel, pairs: Sequence[tuple[str, str]], batch_size: int) -> tuple[float, int]:
    """Sum of the negative log-likelihoods of each ``completion`` after its ``prefix`` (raw text), and the token
    count."""
    tok = lm.tokenizer
    total, count = 0.0, 0
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
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total, count


def language_scores(lm: LoadedModel, *, limit: int | None = None, batch_size: int = 8) -> LanguageScores:
    """Answer log-likelihood on the "text" set's test prompts (through the chat template) and held-out perplexity."""
    from ..data import load_dataset
    from ..data.text import heldout_texts
    from ..models.prompting import build_prompt

    ds = load_dataset("text")
    samples = ds.split("test")[:limit] if limit else ds.split("test")
    pairs = [(build_prompt(lm, s.question, with_image=False), ds.reference(s)) for s in samples]
    answer_nll, answer_tokens = _token_nll(lm, pairs, batch_size)
    bos = lm.tokenizer.bos_token or ""
    held_nll, held_tokens = _token_nll(lm, [(bos, t) for t in heldout_texts()], batch_size)
    return LanguageScores(answer_logprob=-answer_nll / max(1, answer_tokens),
                          heldout_perplexity=math.exp(held_nll / max(1, held_tokens)),
                          n_answers=len(samples), n_heldout_tokens=held_tokens)
