"""The 2x2 study's plan: every fine-tuning run (the sweep, the data-hybrid runs), what each trains on, and how many
replayed answers the hybrid runs need."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from ...config import to_dict
from ...data.sampling import largest_remainder
from ...evaluation.config import EvalConfig
from .config import SweepMethod, TwoByTwoConfig


@dataclass
class RunSpec:
    """One fine-tuning run of the study: where it lives, how it trains and on what."""

    name: str  # its folder under the run folder (sweep/..., hybrid/...)
    kind: Literal["sweep", "hybrid"]
    method: SweepMethod
    lr: float | None
    epochs: int
    datasets: list[str]  # training sources; for hybrid runs the task first, then the other data
    interleave_probs: list[float] | None = None
    budget: int | None = None
    mix_by: str = "sample"
    ratio: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def train_dataset(cfg: TwoByTwoConfig) -> str:
    return cfg.train.dataset or cfg.cells.id_image_id_text


def lr_label(lr: float | None) -> str:
    return "default" if lr is None else f"{lr:g}"


def sweep_plan(cfg: TwoByTwoConfig) -> list[RunSpec]:
    """Every sweep run: methods x learning rates x epochs, in that nesting."""
    return [RunSpec(f"sweep/{m.name}-lr{lr_label(lr)}-e{e}", "sweep", m, lr, e, [train_dataset(cfg)])
            for m in cfg.sweep.methods for lr in cfg.sweep.learning_rates() for e in cfg.sweep.epochs]


def hybrid_probs(ratio: float, weights: list[float]) -> list[float]:
    """Shares of (task, source 1, ..., source k): 1 - r for the task, r split by weight among the sources."""
    total = sum(weights)
    return [1.0 - ratio, *(ratio * w / total for w in weights)]


def hybrid_plan(cfg: TwoByTwoConfig, replay_refs: dict[str, str] | None = None) -> list[RunSpec]:
    """One run per (ratio, mix_by); ratio 0 (the task alone at the same budget) once. ``replay_refs``: source name ->
    the cached replay set's reference (the source's own dataset stands in until it exists)."""
    h = cfg.hybrid
    if not h.enabled():
        return []
    method = h.method or cfg.sweep.methods[0]
    lrs = [lr for lr in cfg.sweep.learning_rates() if lr is not None]
    lr = h.lr if h.lr is not None else (max(lrs) if lrs else None)
    epochs = h.epochs or max(cfg.sweep.epochs)
    budget = h.budget or cfg.train.limit
    refs = [(replay_refs or {}).get(s.name, s.dataset) for s in h.sources]
    specs = []
    for ratio in sorted(set(h.ratios)):
        for mix_by in (["sample"] if ratio == 0 else list(dict.fromkeys(h.mix_by))):
            name = "hybrid/r0" if ratio == 0 else f"hybrid/r{ratio:g}" + (f"-{mix_by}" if len(h.mix_by) > 1 else "")
            specs.append(RunSpec(name, "hybrid", method, lr, epochs, [train_dataset(cfg), *refs],
                                 hybrid_probs(ratio, [s.weight for s in h.sources]), budget, mix_by, ratio))
    return specs


def replay_counts_needed(cfg: TwoByTwoConfig) -> dict[str, int]:
    """Source name -> how many replayed answers the largest ratio needs (interleave counts at the budget)."""
    h = cfg.hybrid
    budget = h.budget or cfg.train.limit or 0
    need: dict[str, int] = {}
    for ratio in h.ratios:
        counts = largest_remainder(budget, hybrid_probs(ratio, [s.weight for s in h.sources]))
        for s, n in zip(h.sources, counts[1:]):
            if s.replay:
                need[s.name] = max(need.get(s.name, 0), n)
    return need


def eval_config(cfg: TwoByTwoConfig) -> EvalConfig:
    return replace(cfg.eval, model=cfg.model, datasets=[*cfg.cells.refs().values(), *cfg.extra_datasets])
