"""Visual-text alignment (EMT's explanation of why early fine-tuning helps).

For each image: the mean of its projected image tokens (what the language model receives) against the language
model's input embeddings of every class name (mean over the name's tokens). Reported: the cosine with the true
class, and the rank of the true class among all classes under that cosine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

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


def _unwrap(model: Any) -> Any:
    """The LLaVA model under a peft wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@torch.inference_mode()
def visual_text_alignment(lm: LoadedModel, dataset: str, images: Sequence[Any], labels: Sequence[int],
                          class_names: Sequence[str], batch_size: int = 64) -> AlignmentResult:
    model = _unwrap(lm.model)
    embed = model.get_input_embeddings()
    tok = lm.tokenizer
    names = []
    for c in class_names:
        ids = torch.tensor(tok(c, add_special_tokens=False)["input_ids"], device=embed.weight.device)
        names.append(embed(ids).float().mean(0))
    text = torch.nn.functional.normalize(torch.stack(names), dim=-1)
    proc = getattr(lm.processor, "image_processor", lm.processor)
    feats = []
    for i in range(0, len(images), batch_size):
        pix = proc(list(images[i : i + batch_size]), return_tensors="pt")["pixel_values"]
        out = model.get_image_features(pixel_values=pix.to(lm.device, model.dtype))
        out = getattr(out, "pooler_output", out)
        if isinstance(out, (list, tuple)):
            out = torch.stack([o.mean(0) for o in out])
        else:
            out = out.mean(1)
        feats.append(out.float())
    img = torch.nn.functional.normalize(torch.cat(feats), dim=-1)
    cos = (img @ text.T).cpu().numpy()
    y = np.asarray(labels)
    true = cos[np.arange(len(y)), y]
    other = cos.copy()
    other[np.arange(len(y)), y] = -np.inf
    rank = (cos > true[:, None]).sum(1)
    return AlignmentResult(dataset, len(y), float(true.mean()), float((true - other.max(1)).mean()),
                           float(rank.mean()), float((rank == 0).mean()))
