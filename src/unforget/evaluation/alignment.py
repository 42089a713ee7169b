"""Visual-text alignment (EMT's explanation of why early fine-tuning helps).

For each image: the mean of its projected image tokens (what the language model receives in place of the image
placeholder, for every family whose image enters as tokens) against the language model's input embeddings of every class name (mean over the name's tokens). Reported: the cosine with the true
class, and the rank of the true class among all classes under that cosine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..models.families import family_of
from ..models.features import base_model, image_token_features
from ..models.loading import LoadedModel


@dataclass
class AlignmentResult:
    dataset: str
    n: int
    cosine_true: float  # mean cosine(image tokens, true class name)
    cosine_margin: float  # mean of (true cosine - best other cosine)
    mean_rank: float  # mean 0-based rank of the true class (0 = best aligned)
    top1: float  # share of images whose best-aligned class name is the true one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alignment_unsupported(lm: LoadedModel) -> str | None:
    """Why the alignment does not apply to ``lm``'s family (None: it applies)."""
    return family_of(lm.family).no_alignment


@torch.inference_mode()
def visual_text_alignment(lm: LoadedModel, dataset: str, images: Sequence[Any], labels: Sequence[int],
                          class_names: Sequence[str], batch_size: int = 64) -> AlignmentResult:
    """Any family whose image tokens enter the language model among the word embeddings (see
    :func:`alignment_unsupported`); the image tokens are what ``get_image_features`` gives for the image as the
    family's processor prepares it."""
    reason = alignment_unsupported(lm)
    if reason is not None:
        raise ConfigError(f"visual-text alignment does not apply to {lm.source}: {reason}")
    embed = base_model(lm.model).get_input_embeddings()
    tok = lm.tokenizer
    names = []
    for c in class_names:
        ids = torch.tensor(tok(c, add_special_tokens=False)["input_ids"], device=embed.weight.device)
        names.append(embed(ids).float().mean(0))
    text = torch.nn.functional.normalize(torch.stack(names), dim=-1)
    img = torch.nn.functional.normalize(image_token_features(lm, images, batch_size), dim=-1)
    cos = (img @ text.T.cpu()).numpy()
    y = np.asarray(labels)
    true = cos[np.arange(len(y)), y]
    other = cos.copy()
    other[np.arange(len(y)), y] = -np.inf
    rank = (cos > true[:, None]).sum(1)
    return AlignmentResult(dataset, len(y), float(true.mean()), float((true - other.max(1)).mean()),
                           float(rank.mean()), float((rank == 0).mean()))
