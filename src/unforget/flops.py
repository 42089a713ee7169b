"""Model FLOPs of LLaVA-family models, counted from the config (for utilisation figures, scaling docs and plans).

Convention (the one MFU figures use, PaLM appendix B / Megatron):

* Only matrix multiplications count, at 2 FLOPs per multiply-accumulate: every linear layer, the patch-embedding
  convolution, the attention score (Q K^T) and value (A V) products, the LM head. Norms, activations, softmax,
  rotary embeddings, biases and embedding lookups are left out (a fraction of a percent at real sizes).
* Attention is counted dense: each of the ``n_tokens`` new tokens meets ``context + n_tokens`` keys, as the eager
  and SDPA-math kernels (and ``torch.utils.flop_counter``) compute it; FlashAttention skips about half of a causal
  prefill, so its hardware FLOPs are lower than this count there.
* The vision tower runs all its layers (Hugging Face does, whatever ``vision_feature_layer`` is); the projector
  sees the image tokens the language model receives (the CLS token dropped under the "default" select strategy).
* Counts are for ONE sequence; multiply a :class:`FlopCount` by the batch size.

Training (:func:`train_step_flops`): a part whose weights train costs 3x its forward (forward, gradient with respect
to its input, gradient with respect to its weights: the usual 6N per token). A frozen part the gradient must pass
through (something trainable lies between it and the input, e.g. the frozen language model when only the
projector trains) costs 2x: forward plus the input gradient, no weight gradient. A frozen part with nothing
trainable before it (the frozen vision tower) costs 1x. Attention score and value products have no weights; when
the gradient passes through them their backward is two products each, so they cost 3x. LoRA adapters count 3x of
their own (small) forward; the frozen base weights under them count 2x. Where autograd provably does less, so does
the count: a trained vision tower's patch convolution needs no pixel gradient (2x), and its layers after the
deepest ``vision_feature_layer`` feed nothing (1x; LLaVA-1.5's last layer). Activation recomputation (gradient
checkpointing) is not counted: these are model FLOPs, not hardware FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable

from .errors import ConfigError

# Language models whose MLP is gated (gate, up, down projections) - the LLaVA-family text backbones.
GATED_MLP_TEXT_MODELS = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "granite", "olmo", "olmo2"}
# Language models whose MLP is two matrices (fc1, fc2).
PLAIN_MLP_TEXT_MODELS = {"opt", "gpt2", "gpt_neox"}
# Vision towers with a CLS token prepended to the patches.
CLS_VISION_MODELS = {"clip_vision_model"}
PATCH_VISION_MODELS = {"siglip_vision_model"}

TRAINABLE_PARTS = ("vision", "projector", "language")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class FlopCount:
    """FLOPs by part of the model; ``total`` is their sum. Supports ``a + b`` and ``a * k`` (k an integer)."""

    vision: int = 0
    projector: int = 0
    text_linear: int = 0  # q/k/v/o and MLP projections of the language model (LoRA adapters included)
    text_attention: int = 0  # Q K^T and A V products
    lm_head: int = 0

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.text_linear + self.text_attention + self.lm_head

    def __add__(self, other: "FlopCount") -> "FlopCount":
        return FlopCount(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, k: int) -> "FlopCount":
        return FlopCount(*(getattr(self, f.name) * k for f in fields(self)))

    __rmul__ = __mul__

    def to_dict(self) -> dict[str, int]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "total": self.total}


@dataclass
class _TextDims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated: bool

    def linear_per_token(self) -> int:
        """MACs of one layer's projections for one token."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o and k, v
        mlp = (3 if self.gated else 2) * self.hidden * self.intermediate
        return attn + mlp

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the layer's linear maps, in LORA_TARGETS order (no gate in a plain MLP)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        shapes = [(h, q), (h, kv), (h, kv), (q, h)]
        return shapes + ([(h, i), (h, i), (i, h)] if self.gated else [(h, i), (i, h)])


@dataclass
class _VisionDims:
    hidden: int
    layers: int
    intermediate: int
    patches: int
    patch_pixels: int  # channels * patch * patch: the patch-embedding's input width
    seq: int  # tokens inside the tower
    image_tokens: int  # tokens handed to the projector (and to the language model) per image
    feature_width: int  # projector input width (several feature layers are concatenated)
    layers_used: int  # layers up to the deepest feature layer; those after it run but get no gradient

    def patch_flops(self) -> int:
        return 2 * self.patches * self.patch_pixels * self.hidden

    def layer_flops(self) -> int:
        linear = self.seq * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)
        return 2 * (linear + 2 * self.seq * self.seq * self.hidden)  # + Q K^T and A V products


def _text_dims(config: Any) -> _TextDims:
    text = getattr(config, "text_config", None) or config
    kind = getattr(text, "model_type", "")
    if kind not in GATED_MLP_TEXT_MODELS | PLAIN_MLP_TEXT_MODELS:
        raise ConfigError(
            f"FLOP counting does not know the language model type '{kind}'; it knows "
            f"{', '.join(sorted(GATED_MLP_TEXT_MODELS | PLAIN_MLP_TEXT_MODELS))} (LLaVA-family text backbones)"
        )
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return _TextDims(
        hidden=hidden,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate=getattr(text, "intermediate_size", None) or getattr(text, "ffn_dim", None) or 4 * hidden,
        vocab=text.vocab_size,
        gated=kind in GATED_MLP_TEXT_MODELS,
    )


def _vision_dims(config: Any) -> _VisionDims:
    vision = getattr(config, "vision_config", None)
    if vision is None:
        raise ConfigError("n_images > 0 but the config has no vision_config (a text-only model?)")
    kind = getattr(vision, "model_type", "")
    if kind not in CLS_VISION_MODELS | PATCH_VISION_MODELS:
        raise ConfigError(
            f"FLOP counting does not know the vision tower type '{kind}'; it knows "
            f"{', '.join(sorted(CLS_VISION_MODELS | PATCH_VISION_MODELS))}"
        )
    patches = (vision.image_size // vision.patch_size) ** 2
    seq = patches + (1 if kind in CLS_VISION_MODELS else 0)
    strategy = getattr(config, "vision_feature_select_strategy", "default")
    layer = getattr(config, "vision_feature_layer", -1)
    feature_layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    n_layers = vision.num_hidden_layers
    # hidden_states[0] is the embeddings' output, hidden_states[k] the output of layer k
    used = max(k if k >= 0 else n_layers + 1 + k for k in feature_layers)
    return _VisionDims(
        hidden=vision.hidden_size,
        layers=vision.num_hidden_layers,
        intermediate=vision.intermediate_size,
        patches=patches,
        patch_pixels=getattr(vision, "num_channels", 3) * vision.patch_size**2,
        seq=seq,
        image_tokens=seq - 1 if strategy == "default" else seq,
        feature_width=vision.hidden_size * len(feature_layers),
        layers_used=used,
    )


def image_tokens(config: Any) -> int:
    """Language-model tokens one image becomes (576 for LLaVA-1.5 at 336 px, 196 for ViT-B/16 at 224 px)."""
    return _vision_dims(config).image_tokens


def forward_flops(
    config: Any,
    n_tokens: int,
    n_images: int = 0,
    context: int = 0,
    *,
    logits_tokens: int | None = None,
) -> FlopCount:
    """FLOPs of one forward of one sequence.

    ``n_tokens``: tokens fed to the language model in this forward, image tokens included (a LLaVA prompt is
    ``image_tokens(config)`` per image plus its text). ``n_images``: images run through the vision tower and
    projector in this forward (anyres models: the tiles). ``context``: tokens already in the KV cache (0 for a
    prompt, the prompt plus the tokens so far for a decode step). ``logits_tokens``: positions whose vocabulary
    logits are computed (default all ``n_tokens``; 1 for a generation prefill, which keeps only the last).
    """
    if n_tokens < 0 or n_images < 0 or context < 0:
        raise ConfigError("n_tokens, n_images and context must be >= 0")
    t = _text_dims(config)
    logits = n_tokens if logits_tokens is None else logits_tokens
    count = FlopCount(
        text_linear=2 * n_tokens * t.layers * t.linear_per_token(),
        text_attention=2 * 2 * t.layers * t.heads * t.head_dim * n_tokens * (context + n_tokens),
        lm_head=2 * logits * t.hidden * t.vocab,
    )
    if n_images:
        v = _vision_dims(config)
        count.vision = n_images * (v.patch_flops() + v.layers * v.layer_flops())
        count.projector = n_images * 2 * v.image_tokens * (v.feature_width * t.hidden + t.hidden * t.hidden)
    return count


def generate_flops(config: Any, prompt_tokens: int, new_tokens: int, n_images: int = 1) -> FlopCount:
    """FLOPs of greedy generation of ``new_tokens`` tokens for one prompt with a KV cache: one prefill of the
    prompt (logits of its last position only, as ``generate`` does), then ``new_tokens - 1`` one-token steps."""
    total = forward_flops(config, prompt_tokens, n_images, 0, logits_tokens=1)
    for step in range(1, new_tokens):
        total = total + forward_flops(config, 1, 0, prompt_tokens + step - 1, logits_tokens=1)
    return total


def train_step_flops(
    config: Any,
    n_tokens: int,
    n_images: int = 0,
    *,
    trainable: Iterable[str] = ("projector",),
    lora_rank: int = 0,
    lora_targets: Iterable[str] = LORA_TARGETS,
    logits_tokens: int | None = None,
) -> FlopCount:
    """FLOPs of one training step (forward + backward) on one sequence; see the module docstring for the rule.

    ``trainable``: parts whose weights train, from ``vision``, ``projector``, ``language`` (the LM head is part of
    the language model). ``lora_rank > 0``: LoRA adapters of that rank on the language model's ``lora_targets``
    (``q k v o gate up down``) train while its base weights stay frozen."""
    parts = set(trainable)
    unknown = parts - set(TRAINABLE_PARTS)
    if unknown:
        raise ConfigError(f"unknown trainable part(s) {sorted(unknown)}; use {', '.join(TRAINABLE_PARTS)}")
    targets = set(lora_targets)
    if not targets <= set(LORA_TARGETS):
        raise ConfigError(f"unknown LoRA target(s) {sorted(targets - set(LORA_TARGETS))}; use {' '.join(LORA_TARGETS)}")
    if lora_rank < 0:
        raise ConfigError("lora_rank must be >= 0")
    fwd = forward_flops(config, n_tokens, n_images, logits_tokens=logits_tokens)
    lora = lora_rank > 0

    # a frozen tower with nothing before it needs no backward at all (its attention included)
    vision_grad = "vision" in parts
    projector_grad = vision_grad or "projector" in parts
    text_grad = projector_grad or "language" in parts or lora
    # the LoRA adapters sit inside the text stack: its frozen base must pass their gradient down
    text_factor = 3 if "language" in parts else (2 if text_grad else 1)
    count = FlopCount(
        vision=fwd.vision,
        projector=fwd.projector * (3 if "projector" in parts else 2 if vision_grad else 1),
        text_linear=fwd.text_linear * text_factor,
        text_attention=fwd.text_attention * (3 if text_grad else 1),
        lm_head=fwd.lm_head * text_factor,
    )
    if vision_grad:
        # the patch convolution needs no gradient for the pixels (2x), layers after the deepest feature layer
        # get no gradient at all (1x: LLaVA-1.5 never backpropagates its last vision layer)
        v = _vision_dims(config)
        count.vision = n_images * (2 * v.patch_flops() + 3 * v.layers_used * v.layer_flops()
                                   + (v.layers - v.layers_used) * v.layer_flops())
    if lora:
        t = _text_dims(config)
        names = LORA_TARGETS if t.gated else tuple(n for n in LORA_TARGETS if n != "gate")
        shapes = dict(zip(names, t.linear_shapes()))
        macs = sum(lora_rank * (d_in + d_out) for name, (d_in, d_out) in shapes.items() if name in targets)
        count.text_linear += 3 * 2 * n_tokens * t.layers * macs
    return count
