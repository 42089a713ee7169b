"""Rank mode: score every class name's log-likelihood given image + prompt, judge-free and deterministic.

The image+prompt prefix is run once per image (batched) and its KV cache is shared by all candidates: the candidate
token sequences are merged into a trie and its nodes are packed into ONE extra sequence per image, with a tree
attention mask (each node sees the prefix and its own ancestors) and positions that restart after the prefix. The
prefix cache is never copied K times, and candidates sharing leading tokens ("red star", "red circle") share work,
so the cost per image is one prefix forward plus one token per trie node, not K full forwards.

Families whose positions are not plain 1-D (Qwen2-VL's M-RoPE) or whose forward does not take a 4-D mask use the
batched fallback: one forward per (image, candidate), candidates batched.

The prefix's keys and values live in a transformers ``DynamicCache`` made here and handed to both forwards under the
name the model's forward takes (``cache`` since transformers 5; ``past_key_values``, which 5.x deprecates and 5.40
removes, before), never read back from the outputs' deprecated ``past_key_values``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from ..errors import ConfigError
from ..models.loading import LoadedModel
from ..models.prompting import build_prompt, encode_batch

TREE_FAMILIES = {"llava", "llava_next", "llava_onevision", "vipllava"}


@dataclass
class CandidateTrie:
    """Trie over candidate token sequences. Node i (0-based) has ``token[i]``, ``parent[i]`` (-1 = the prefix) and
    ``depth[i]`` (1 = first answer token). ``paths[k]`` lists the nodes of candidate k in order."""

    token: list[int]
    parent: list[int]
    depth: list[int]
    paths: list[list[int]]

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> "CandidateTrie":
        token: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        children: dict[tuple[int, int], int] = {}
        paths = []
        for seq in sequences:
            node, path = -1, []
            for d, tok in enumerate(seq):
                key = (node, int(tok))
                if key not in children:
                    children[key] = len(token)
                    token.append(int(tok))
                    parent.append(node)
                    depth.append(d + 1)
                node = children[key]
                path.append(node)
            paths.append(path)
        return cls(token, parent, depth, paths)

    def fed_nodes(self) -> list[int]:
        """Nodes whose output is needed: those with children (a node's token is scored at its parent's output)."""
        has_child = sorted({p for p in self.parent if p >= 0})
        return has_child

    def score_index(self, nodes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each candidate's tokens are scored, as (K, L) tensors (paths padded to the longest, L): the
        output row (0: the prefix's last position, 1 + i: fed node ``nodes[i]``), the token, and which entries
        are real. Lets one gather score every candidate at once."""
        index = {n: i + 1 for i, n in enumerate(nodes)}
        longest = max((len(p) for p in self.paths), default=0)
        rows = torch.zeros(len(self.paths), longest, dtype=torch.long)
        tokens = torch.zeros(len(self.paths), longest, dtype=torch.long)
        valid = torch.zeros(len(self.paths), longest, dtype=torch.bool)
        for k, path in enumerate(self.paths):
            for d, node in enumerate(path):
                rows[k, d] = 0 if self.parent[node] < 0 else index[self.parent[node]]
                tokens[k, d] = self.token[node]
                valid[k, d] = True
        return rows, tokens, valid

    def ancestor_mask(self, nodes: Sequence[int]) -> torch.Tensor:
        """(M, M) bool: fed node a may attend to fed node b when b is a itself or an ancestor of a."""
        index = {n: i for i, n in enumerate(nodes)}
        mask = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)
        for i, n in enumerate(nodes):
            cur = n
            while cur >= 0:
                mask[i, index[cur]] = True
                cur = self.parent[cur]
        return mask


def candidate_token_ids(lm: LoadedModel, candidates: Sequence[str], with_end: bool = True) -> list[list[int]]:
    """The tokens the model would emit for each candidate answer (and its end-of-turn token)."""
    tok = lm.tokenizer
    end = tok.eos_token if (with_end and tok.eos_token) else ""
    return [tok(c + end, add_special_tokens=False)["input_ids"] for c in candidates]


def score_candidates(
    lm: LoadedModel,
    images: Sequence[Image.Image | None],
    questions: Sequence[str],
    candidates: Sequence[str],
    *,
    batch_size: int = 16,
    normalise: str = "sum",
    with_end: bool = True,
    method: str = "auto",
) -> np.ndarray:
    """(n_images, n_candidates) log-likelihoods (``normalise="mean"``: per token)."""
    seqs = candidate_token_ids(lm, candidates, with_end)
    use_tree = method == "tree" or (method == "auto" and lm.family in TREE_FAMILIES)
    prompts = [build_prompt(lm, q, with_image=im is not None) for q, im in zip(questions, images)]
    out = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
    trie = CandidateTrie.build(seqs)
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        if use_tree:
            out[sl] = _score_tree(lm, list(images[sl]), prompts[sl], trie)
        else:
            out[sl] = _score_naive(lm, list(images[sl]), prompts[sl], seqs, batch_size=max(batch_size, 8))
    if normalise == "mean":
        out /= np.array([len(s) for s in seqs], dtype=np.float64)[None, :]
    return out


@torch.inference_mode()
def _score_tree(lm: LoadedModel, images, prompts, trie: CandidateTrie) -> np.ndarray:
    model = lm.model
    enc = encode_batch(lm, images, prompts)
    attn = enc["attention_mask"]
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(model)
    cache_arg = cache_keyword(model)
    prefix = model(**enc, position_ids=positions, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    first = prefix.logits[:, -1].float()  # (B, V): scores depth-1 tokens
    B, P = attn.shape
    nodes = trie.fed_nodes()
    rows, tokens, valid = (t.to(attn.device) for t in trie.score_index(nodes))
    # log p = logit - logsumexp, gathered for the scored tokens only: no (B, M, V) log-softmax copy, and one
    # gather instead of a Python loop over candidates (each step of which synchronised a GPU)
    logp = first[:, tokens] - torch.logsumexp(first, dim=-1)[:, None, None]  # (B, K, L)
    if nodes:
        device = attn.device
        ids = torch.tensor([trie.token[n] for n in nodes], device=device).expand(B, -1)
        depth = torch.tensor([trie.depth[n] for n in nodes], device=device)
        lengths = attn.sum(-1)
        pos = lengths[:, None] + depth[None, :] - 1
        dtype = next(model.parameters()).dtype
        neg = torch.finfo(dtype).min
        M = len(nodes)
        mask = torch.full((B, 1, M, P + M), neg, dtype=dtype, device=device)
        mask[:, :, :, :P] = torch.where(attn[:, None, None, :] > 0, 0.0, neg).to(dtype)
        mask[:, :, :, P:] = torch.where(trie.ancestor_mask(nodes).to(device), 0.0, neg).to(dtype)
        # the trie's nodes attend to the prefix through the cache (which they extend; it is not used again)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **{cache_arg: cache})
        node_logits = res.logits.float()  # (B, M, V)
        node_rows = (rows - 1).clamp(min=0)
        from_nodes = node_logits[:, node_rows, tokens] - torch.logsumexp(node_logits, dim=-1)[:, node_rows]
        logp = torch.where(rows > 0, from_nodes, logp)
    return torch.where(valid, logp, 0.0).sum(-1).cpu().numpy()


def new_cache(model: Any) -> DynamicCache:
    """An empty KV cache shaped by the model's config (sliding-window layers where it has them), as the model makes
    its own; without the config where the installed transformers' DynamicCache takes none."""
    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward takes a KV cache: ``cache`` (transformers 5), else the older
    ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "cache"
    return "cache" if "cache" in parameters or "past_key_values" not in parameters else "past_key_values"


@torch.inference_mode()
def _score_naive(lm: LoadedModel, images, prompts, seqs: list[list[int]], batch_size: int) -> np.ndarray:
    """One full forward per (image, candidate), batched over candidates: the plain way, and the fallback."""
    model = lm.model
    scores = np.zeros((len(prompts), len(seqs)))
    tok = lm.tokenizer
    for i, (im, prompt) in enumerate(zip(images, prompts)):
        for c0 in range(0, len(seqs), batch_size):
            chunk = seqs[c0 : c0 + batch_size]
            texts = [prompt] * len(chunk)
            enc = encode_batch(lm, [im] * len(chunk), texts, padding_side="right")
            plen = enc["attention_mask"].sum(-1)
            longest = int(plen.max()) + max(len(s) for s in chunk)
            n = len(chunk)
            ids = torch.full((n, longest), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((n, longest), dtype=torch.long)
            for j, s in enumerate(chunk):
                L = int(plen[j])
                ids[j, :L] = enc["input_ids"][j, :L]
                ids[j, L : L + len(s)] = torch.tensor(s)
                mask[j, : L + len(s)] = 1
            extra = {k: _extend_token_aligned(v, enc["input_ids"], longest) for k, v in enc.items()
                     if k not in ("input_ids", "attention_mask")}
            logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), **extra).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for j, s in enumerate(chunk):
                L = int(plen[j])
                positions = torch.arange(L - 1, L - 1 + len(s))
                scores[i, c0 + j] = logp[j, positions, torch.tensor(s)].sum().item()
    return scores


def _extend_token_aligned(value: Any, input_ids: torch.Tensor, longest: int) -> Any:
    """A per-token input of the prompt (Qwen2-VL's ``mm_token_type_ids``: one entry per input id) padded with 0
    (a text token) to the prompt + candidate length; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.shape == input_ids.shape and value.shape[-1] < longest:
        return torch.nn.functional.pad(value, (0, longest - value.shape[-1]))
    return value


def rank_classes(
    lm: LoadedModel,
    class_names: Sequence[str],
    images: Sequence[Image.Image | None],
    questions: Sequence[str],
    references: Sequence[str],
    *,
    batch_size: int = 16,
    normalise: str = "sum",
    top_k: int = 5,
) -> list[dict]:
    """Per sample: the predicted class, the 0-based rank of the reference, and the top-k classes with scores.
    ``class_names``: the candidates (a free-answer set's answer vocabulary); a reference outside them has rank None."""
    if not class_names:
        raise ConfigError("rank mode needs candidates to rank: this dataset has no class list and no answer "
                          "vocabulary; give it answer_list= or evaluate it in generate mode")
    scores = score_candidates(lm, images, questions, class_names, batch_size=batch_size, normalise=normalise)
    out = []
    names = list(class_names)
    for row, ref in zip(scores, references):
        order = np.argsort(-row, kind="stable")
        rank = int(np.nonzero(order == names.index(ref))[0][0]) if ref in names else None
        out.append({
            "prediction": names[order[0]],
            "rank_of_reference": rank,
            "top_k": [[names[j], round(float(row[j]), 4)] for j in order[:top_k]],
        })
    return out
