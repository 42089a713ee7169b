"""The sub-runs a tailor study config asks for, and their folder names: what the run executes and what the
summary lists as missing when a folder is not finished."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .config import MULTI, TailoringArm, TailorStudyConfig


@dataclass
class SubRun:
    """One tailoring run: a group of targets, a method and (for grafting methods) a sparsity."""

    group: str
    targets: list[str]
    arm: TailoringArm
    sparsity: float | None

    @property
    def folder_name(self) -> str:
        return self.arm.name if self.sparsity is None else f"{self.arm.name}-{percent_label(self.sparsity)}pct"

    def options(self) -> dict[str, Any]:
        options = dict(self.arm.options)
        if self.sparsity is not None:
            options["sparsity"] = self.sparsity
        return options

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "targets": self.targets, "name": self.arm.name, "method": self.arm.method,
                "sparsity": self.sparsity, "options": self.options()}


def percent_label(fraction: float) -> str:
    """0.1 -> "10", 0.005 -> "0.5"."""
    return f"{fraction * 100:.6g}"


def target_groups(targets: Sequence[str], single_task: bool, multi_task: bool) -> dict[str, list[str]]:
    """Group name -> the targets grafted together: each target alone, then all of them at once (``multi``)."""
    out = {t: [t] for t in targets} if single_task else {}
    if multi_task and len(targets) > 1:
        out[MULTI] = list(targets)
    return out


def plan_runs(groups: dict[str, list[str]], arms: Sequence[TailoringArm], sparsities: Sequence[float]) -> list[SubRun]:
    """Per group and arm: one run at each sparsity for an arm that sweeps, else one run at its options."""
    runs = []
    for group, targets in groups.items():
        for arm in arms:
            if arm.sweeps:
                runs += [SubRun(group, targets, arm, s) for s in sparsities]
            else:
                runs.append(SubRun(group, targets, arm, None))
    return runs


def groups(cfg: TailorStudyConfig) -> dict[str, list[str]]:
    return target_groups([t.name for t in cfg.targets], cfg.single_task, cfg.multi_task)


def plan(cfg: TailorStudyConfig) -> list[SubRun]:
    return plan_runs(groups(cfg), cfg.methods, cfg.sparsities)


__all__ = ["SubRun", "groups", "percent_label", "plan", "plan_runs", "target_groups"]
