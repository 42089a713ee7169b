"""The 2x2 study's summary (metrics.json) and report, computed from its run folder only.

Inputs (layout in :mod:`unforget.studies.twobytwo`): ``config.yaml``; ``cells.json`` (the dataset name each cell's
records carry); ``base/samples.jsonl`` (epoch 0); per run
``spec.json`` (what it trains), ``samples.jsonl`` (its judged answers on the four cells), ``metrics.json``
(trainable parameters, training sources), ``probe.jsonl`` (the judge-free probe, when measured),
``language.jsonl`` (answer log-likelihood and held-out perplexity, when a "text" set is among ``extra_datasets``)
and ``DONE``.

Every figure is recomputed from the judged records, pairing the same (dataset, id) across evaluations:

- accuracy per cell with a Wilson interval; forgetting = base - tuned (`stats.forgetting_delta`, exact McNemar,
  Newcombe interval); gain = tuned - base on the target cell;
- the Pareto front of target gain against forgetting (on the three other cells, and on the two OOD-image cells);
- claims as `stats.check_claim` verdicts: the paper's "constraining trainable parameters or lowering the learning
  rate prevents forgetting on OOD images" on every sweep run, and "hybrid data recovers the ID-image + OOD-text
  cell while the target gain stays" on every hybrid run;
- the judge-free probe per run (KL from the base model per cell, label mass) against the measured forgetting, with
  Spearman's rank correlation across runs (:mod:`.probe`);
- language forgetting per run: accuracy on the text set, answer log-likelihood and held-out perplexity with
  bootstrap intervals over items, and their change from the base model paired on the same items (:mod:`.language`).

``summarise_twobytwo(run_dir)`` returns the JSON-ready summary; ``write_twobytwo_report(run_dir)`` writes it as
``metrics.json`` with ``report.html``, ``report.md`` and ``plots/*.png`` (the page: :mod:`.twobytwo_page`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..config import read_yaml
from ..errors import DataError
from ..runs import atomic_write_json, read_json, read_jsonl
from ..stats import (
    ClaimCheck,
    Estimate,
    PairedTest,
    check_claim,
    forgetting_delta,
    mcnemar_exact,
)
from .base import REPORTS, ReportKind
from .document import ReportFiles
from .language import change_sentence, change_verdicts, language_point, language_row
from .probe import probe_mean, probe_row, rank_correlation

log = logging.getLogger(__name__)

# the rule of unforget.studies.twobytwo (not imported: that pulls in the training stack)
CELL_KEYS: tuple[str, ...] = ("id_image_id_text", "id_image_ood_text", "ood_image_id_text", "ood_image_ood_text")
TARGET_CELL = "id_image_id_text"
OTHER_CELLS: tuple[str, ...] = CELL_KEYS[1:]
OOD_IMAGE_CELLS: tuple[str, ...] = ("ood_image_id_text", "ood_image_ood_text")
CELL_LABELS = {
    "id_image_id_text": "ID image + ID text (target)",
    "id_image_ood_text": "ID image + OOD text",
    "ood_image_id_text": "OOD image + ID text",
    "ood_image_ood_text": "OOD image + OOD text",
}


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class RunRecords:
    """One fine-tuning run as found on disk; ``records[cell]`` lists its judged answers on that cell."""

    name: str
    spec: dict[str, Any]
    metrics: dict[str, Any] | None
    done: bool
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    probe: dict[str, Any] | None = None  # its probe.jsonl row (after training)
    language: dict[str, Any] | None = None  # its language.jsonl row (after training)
    text_records: list[dict[str, Any]] = field(default_factory=list)  # its judged answers on the text set

    @property
    def kind(self) -> str:
        return str(self.spec.get("kind", "sweep"))

    @property
    def method_name(self) -> str:
        return str((self.spec.get("method") or {}).get("name", "?"))

    @property
    def lr(self) -> float | None:
        lr = self.spec.get("lr")
        return float(lr) if lr is not None else None

    @property
    def epochs(self) -> int:
        return int(self.spec.get("epochs", 0))

    @property
    def trainable_parameters(self) -> int | None:
        return (self.metrics or {}).get("trainable_parameters")


@dataclass
class TwoByTwoRun:
    path: Path
    config: dict[str, Any]
    cells: dict[str, str]  # cell key -> dataset reference
    alpha: float
    margin: float
    base: dict[str, list[dict[str, Any]]]
    base_done: bool
    runs: list[RunRecords]
    names: dict[str, str] = field(default_factory=dict)  # cell key -> the dataset name its records carry
    base_probe: dict[str, Any] | None = None
    text_dataset: str | None = None  # the "text" set among extra_datasets (language forgetting), if any
    base_language: dict[str, Any] | None = None
    base_text: list[dict[str, Any]] = field(default_factory=list)


def judged(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with a verdict: skipped samples and judge failures (correct None) are left out."""
    return [r for r in records if not r.get("skipped") and r.get("correct") is not None]


def _by_cell(records: Sequence[dict[str, Any]], names: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Records by cell; ``names``: cell -> the dataset name its records carry."""
    key_of = {name: key for key, name in names.items()}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in names}
    for r in records:
        key = key_of.get(r.get("dataset"))
        if key is not None:
            out[key].append(r)
    return out


def read_twobytwo_run(run_dir: str | Path) -> TwoByTwoRun:
    path = Path(run_dir)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{path} has no config.yaml: it is not a 2x2 run folder (run `unforget study 2x2` first)")
    cfg = read_yaml(config_path)
    cells_cfg = cfg.get("cells") or {}
    missing = [k for k in CELL_KEYS if not cells_cfg.get(k)]
    if missing:
        raise DataError(f"{config_path}: cells {missing} are not set; a 2x2 config names all four cells")
    cells = {k: str(cells_cfg[k]) for k in CELL_KEYS}
    # records carry the loaded dataset's name, which the study wrote down per cell (the reference when options
    # are given; a format reference without options loads under the file's or folder's name)
    names_path = path / "cells.json"
    names = {k: v["dataset"] for k, v in read_json(names_path).items()} if names_path.exists() else cells
    base_records = [r for r in read_jsonl(path / "base" / "samples.jsonl") if r.get("epoch", 0) == 0]
    text = next((str(d) for d in cfg.get("extra_datasets") or [] if str(d).split("?", 1)[0] == "text"), None)
    if not base_records:
        raise DataError(f"{path / 'base' / 'samples.jsonl'} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study 2x2` on this config to finish it")
    runs = []
    for kind in ("sweep", "hybrid"):
        folder = path / kind
        if not folder.is_dir():
            continue
        for sub in sorted(p for p in folder.iterdir() if (p / "spec.json").is_file()):
            spec = read_json(sub / "spec.json")
            metrics = read_json(sub / "metrics.json") if (sub / "metrics.json").exists() else None
            records = read_jsonl(sub / "samples.jsonl")
            runs.append(RunRecords(name=f"{kind}/{sub.name}", spec=spec, metrics=metrics, done=(sub / "DONE").exists(),
                                   records=_by_cell(records, names), probe=probe_row(sub),
                                   language=language_row(sub), text_records=_of_dataset(records, text)))
    runs.sort(key=lambda r: _plan_order(cfg, r))
    return TwoByTwoRun(path=path, config=cfg, cells=cells, alpha=float(cfg.get("alpha", 0.05)),
                       margin=float(cfg.get("margin", 0.05)), base=_by_cell(base_records, names),
                       base_done=(path / "base" / "DONE").exists(), runs=runs, names=names,
                       base_probe=probe_row(path / "base", epoch=0), text_dataset=text,
                       base_language=language_row(path / "base", epoch=0),
                       base_text=_of_dataset(base_records, text))


def _of_dataset(records: Sequence[dict[str, Any]], dataset: str | None) -> list[dict[str, Any]]:
    # the text set loads under its reference ("text", "text?kinds=arithmetic"), which its records carry
    return [r for r in records if dataset is not None and r.get("dataset") == dataset]


def _plan_order(cfg: dict[str, Any], run: RunRecords) -> tuple:
    """Runs in the config's order: sweep methods as listed, then learning rate, epochs; hybrid by ratio."""
    methods = [m.get("name") for m in ((cfg.get("sweep") or {}).get("methods") or [])]
    method_rank = methods.index(run.method_name) if run.method_name in methods else len(methods)
    return (run.kind != "sweep", method_rank, run.lr if run.lr is not None else 0.0, run.epochs,
            float(run.spec.get("ratio", 0.0)), str(run.spec.get("mix_by", "")))


# ------------------------------------------------------------------------------------------------- pure parts


def paired_flags(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> tuple[list[bool], list[bool]]:
    """Correctness of the samples judged in both lists, matched by (dataset, id), in ``before``'s order."""
    after_by_id = {(r["dataset"], r["id"]): r for r in judged(after)}
    a, b = [], []
    for r in judged(before):
        other = after_by_id.get((r["dataset"], r["id"]))
        if other is not None:
            a.append(bool(r["correct"]))
            b.append(bool(other["correct"]))
    return a, b


@dataclass(frozen=True)
class CellMetrics:
    """One cell before and after fine-tuning, on the samples judged in both: accuracies with Wilson intervals,
    ``forgetting`` = base - tuned (exact McNemar; its ``delta`` is positive when the model forgot)."""

    base: Estimate
    after: Estimate
    forgetting: PairedTest

    @property
    def n(self) -> int:
        return self.forgetting.delta.n

    @property
    def gain(self) -> float:
        return -self.forgetting.delta.value

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "base": self.base.to_dict(), "after": self.after.to_dict(),
                "forgetting": self.forgetting.to_dict(), "gain": self.forgetting.delta.negated().to_dict()}


def cell_metrics(base_records: Sequence[dict[str, Any]], tuned_records: Sequence[dict[str, Any]],
                 alpha: float = 0.05) -> CellMetrics | None:
    """Base vs tuned on one cell (or on cells pooled); None when no sample was judged in both."""
    before, after = paired_flags(base_records, tuned_records)
    if not before:
        return None
    test = forgetting_delta(before, after, alpha=alpha)
    assert test.before is not None and test.after is not None
    return CellMetrics(base=test.before, after=test.after, forgetting=test)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points (forgetting, gain) that no other point beats: none has forgetting <= and gain >=,
    one of them strictly. Points with a missing or non-finite coordinate are never on the front. Sorted by
    forgetting, then by gain (highest first)."""
    valid = [(i, float(x), float(y)) for i, (x, y) in enumerate(points)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    front = []
    for i, x, y in valid:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, x2, y2 in valid if j != i)
        if not dominated:
            front.append((x, -y, i))
    return [i for _, _, i in sorted(front)]


@dataclass(frozen=True)
class HeatmapData:
    """``values[r][c]``: the figure of method ``rows[r]`` at learning rate ``cols[c]`` (None: no such run)."""

    rows: list[str]
    cols: list[str]
    values: list[list[float | None]]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "values": self.values}


def sweep_grid(points: Sequence[dict[str, Any]], value_key: str, methods: Sequence[str] | None = None) -> HeatmapData:
    """The (method x learning rate) grid of ``point[value_key]`` over sweep points (dicts with ``method_name``,
    ``lr``). Rows follow ``methods`` (default: first seen), columns the learning rates in increasing order."""
    rows = list(methods) if methods is not None else list(dict.fromkeys(p["method_name"] for p in points))
    lrs = sorted({p["lr"] for p in points if p.get("lr") is not None})
    cols = [f"{lr:g}" for lr in lrs]
    values: list[list[float | None]] = [[None] * len(lrs) for _ in rows]
    for p in points:
        if p["method_name"] in rows and p.get("lr") in lrs:
            values[rows.index(p["method_name"])][lrs.index(p["lr"])] = p.get(value_key)
    return HeatmapData(rows, cols, values)


# ------------------------------------------------------------------------------------------------- summary


def summarise_twobytwo(run_dir: str | Path) -> dict[str, Any]:
    """The study's numbers, computed from the run folder only, as a JSON-ready dict (written as metrics.json)."""
    run = read_twobytwo_run(run_dir)
    points = [_summarise_run(run, r) for r in run.runs]
    for key, cells in (("other", OTHER_CELLS), ("ood_image", OOD_IMAGE_CELLS)):
        coords = [(p["forgetting_" + key], p["target_gain"]) for p in points]
        for i in pareto_front(coords):
            points[i]["pareto_" + key] = True
    sweep = [p for p in points if p["kind"] == "sweep"]
    methods = [m.get("name") for m in ((run.config.get("sweep") or {}).get("methods") or [])]
    methods = [m for m in methods if any(p["method_name"] == m for p in sweep)]
    heatmaps = {}
    for epochs in sorted({p["epochs"] for p in sweep}):
        at = [p for p in sweep if p["epochs"] == epochs]
        heatmaps[str(epochs)] = {cell: sweep_grid([{**p, "value": p["forgetting"].get(cell)} for p in at],
                                                  "value", methods).to_dict() for cell in CELL_KEYS}
        heatmaps[str(epochs)]["trainable_parameters"] = sweep_grid(at, "trainable_parameters", methods).to_dict()
    cfg = run.config
    summary: dict[str, Any] = {
        "study": "2x2",
        "unforget": __version__,
        "run_dir": str(run.path),
        "name": cfg.get("name", run.path.name),
        "model": (cfg.get("model") or {}).get("name"),
        "fine_tuning_set": (cfg.get("train") or {}).get("dataset") or run.cells[TARGET_CELL],
        "cells": run.cells,
        "cell_labels": CELL_LABELS,
        "alpha": run.alpha,
        "margin": run.margin,
        "eval": {k: (cfg.get("eval") or {}).get(k) for k in ("split", "mode", "limit", "judges")},
        "sweep": {"methods": [m.get("name") for m in ((cfg.get("sweep") or {}).get("methods") or [])],
                  "epochs": (cfg.get("sweep") or {}).get("epochs")},
        "hybrid": {k: (cfg.get("hybrid") or {}).get(k) for k in ("ratios", "budget", "mix_by", "mix_strategy")}
        | {"sources": [s.get("name") for s in ((cfg.get("hybrid") or {}).get("sources") or [])]},
        "base_done": run.base_done,
        "base": {cell: _accuracy(run.base.get(cell, []), run.alpha) for cell in CELL_KEYS},
        "runs": points,
        "heatmaps": heatmaps,
        "claims": _claims(run),
        "probe": probe_summary(run, points),
        "language": language_summary(run),
        "notes": _notes(run),
    }
    return summary


PROBE_UNIT = "run"


def probe_summary(run: TwoByTwoRun, points: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The judge-free probe of every run against its measured forgetting.

    Per run: the probe's KL on each cell, on the two OOD-image cells and on the three other cells (means over their
    probe samples), the mass on the fine-tuning labels, and the forgetting measured on the same cells (paired, from
    the summary's points). Spearman's rho across runs says whether the probe orders the runs as the judged
    evaluation does; the OOD-image cells are the ones the paper's claims are about.
    """
    if run.base_probe is None and not any(r.probe for r in run.runs):
        return None
    names = run.names or run.cells
    rows = []
    for r, p in zip(run.runs, points):
        if r.probe is None:
            continue
        mass = r.probe.get("label_mass")
        rows.append({
            "name": r.name, "kind": r.kind, "group": r.method_name if r.kind == "sweep" else "hybrid",
            "epoch": r.probe.get("epoch"),
            "kl": (r.probe.get("kl") or {}).get("value"),
            "kl_cells": {c: probe_mean(r.probe, [names[c]]) for c in CELL_KEYS},
            "kl_ood_image": probe_mean(r.probe, [names[c] for c in OOD_IMAGE_CELLS]),
            "kl_other": probe_mean(r.probe, [names[c] for c in OTHER_CELLS]),
            "label_mass": mass, "label_mass_value": mass["value"] if mass else None,
            "forgetting_ood_image": p["forgetting_ood_image"], "forgetting_other": p["forgetting_other"],
            "forgetting_cells": p["forgetting"],
        })
    base = run.base_probe or {}
    return {
        "label_set": base.get("label_set") or next((r.probe.get("label_set") for r in run.runs if r.probe), None),
        "base_label_mass": base.get("base_label_mass") or (base.get("label_mass") or {}).get("value"),
        "probe_samples": {c: ((base.get("by_dataset") or {}).get(names[c]) or {}).get("n") for c in CELL_KEYS},
        "points": rows,
        "correlation": {
            "ood_image": rank_correlation(rows, "kl_ood_image", "forgetting_ood_image", PROBE_UNIT),
            "other": rank_correlation(rows, "kl_other", "forgetting_other", PROBE_UNIT),
            "label_mass_ood_image": rank_correlation(rows, "label_mass_value", "forgetting_ood_image", PROBE_UNIT),
        },
        "missing": [r.name for r in run.runs if r.probe is None],
    }


def language_summary(run: TwoByTwoRun) -> dict[str, Any] | None:
    """Language forgetting per run: the judged accuracy on the text set, answer log-likelihood and held-out
    perplexity (bootstrap intervals over items) and their change from the base model (paired on the same items),
    with a sentence per run. None when no language.jsonl row exists (no "text" set among extra_datasets, or
    language.enabled false)."""
    if run.base_language is None and not any(r.language for r in run.runs):
        return None
    confidence = 1.0 - run.alpha
    base = (language_point(run.base_language, None, confidence, _accuracy(run.base_text, run.alpha))
            if run.base_language else None)
    points, sentences = [], []
    for r in run.runs:
        if r.language is None:
            continue
        point = {"name": r.name, **language_point(r.language, run.base_language, confidence,
                                                  _accuracy(r.text_records, run.alpha))}
        text_change = cell_metrics(run.base_text, r.text_records, run.alpha)
        point["accuracy_change"] = text_change.forgetting.delta.negated().to_dict() if text_change else None
        if base is not None:
            point["verdicts"] = change_verdicts(point)
            sentences.append(change_sentence(r.name, point, base, confidence))
        points.append(point)
    dataset = (run.base_language or next(r.language for r in run.runs if r.language) or {}).get("dataset")
    return {"dataset": dataset, "confidence": confidence, "base": base, "points": points, "sentences": sentences,
            "missing": [r.name for r in run.runs if r.language is None]}


def _accuracy(records: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any] | None:
    from ..stats import wilson_interval

    kept = judged(records)
    if not kept:
        return None
    return wilson_interval(sum(bool(r["correct"]) for r in kept), len(kept), 1.0 - alpha).to_dict()


def _pooled(per_cell: dict[str, list[dict]], cells: Sequence[str]) -> list[dict]:
    return [r for c in cells for r in per_cell.get(c, [])]


def _summarise_run(run: TwoByTwoRun, r: RunRecords) -> dict[str, Any]:
    cells = {c: cell_metrics(run.base.get(c, []), r.records.get(c, []), run.alpha) for c in CELL_KEYS}
    other = cell_metrics(_pooled(run.base, OTHER_CELLS), _pooled(r.records, OTHER_CELLS), run.alpha)
    ood = cell_metrics(_pooled(run.base, OOD_IMAGE_CELLS), _pooled(r.records, OOD_IMAGE_CELLS), run.alpha)
    target = cells[TARGET_CELL]
    metrics = r.metrics or {}
    return {
        "name": r.name,
        "kind": r.kind,
        "method_name": r.method_name,
        "method": (r.spec.get("method") or {}).get("method"),
        "options": (r.spec.get("method") or {}).get("options") or {},
        "lr": r.lr,
        "epochs": r.epochs,
        "ratio": r.spec.get("ratio"),
        "mix_by": r.spec.get("mix_by"),
        "done": r.done,
        "trainable_parameters": r.trainable_parameters,
        "total_parameters": metrics.get("total_parameters"),
        "train_examples": metrics.get("train_examples"),
        "final_loss": metrics.get("final_loss"),
        "cells": {c: (m.to_dict() if m else None) for c, m in cells.items()},
        "after": {c: (m.after.value if m else None) for c, m in cells.items()},
        "forgetting": {c: (m.forgetting.delta.value if m else None) for c, m in cells.items()},
        "target_gain": target.gain if target else None,
        "target_gain_interval": target.forgetting.delta.negated().to_dict() if target else None,
        "forgetting_other": other.forgetting.delta.value if other else None,
        "forgetting_other_test": other.forgetting.to_dict() if other else None,
        "forgetting_ood_image": ood.forgetting.delta.value if ood else None,
        "forgetting_ood_image_test": ood.forgetting.to_dict() if ood else None,
        "pareto_other": False,
        "pareto_ood_image": False,
    }


# ------------------------------------------------------------------------------------------------- claims


def _check(claim: str, before: list[bool], after: list[bool], alpha: float, expect: str, subject: str,
           delta_of: str, margin: float = 0.0) -> ClaimCheck:
    """`stats.check_claim` on an exact McNemar test of ``after`` vs ``before`` (delta = after - before)."""
    test: PairedTest = replace(mcnemar_exact(before, after, alpha=alpha), delta_of=delta_of)
    return check_claim(claim, test, expect, subject=subject, margin=margin)  # type: ignore[arg-type]


def _claim_dict(claim_id: str, check: ClaimCheck, runs: Sequence[str], details: Sequence[str] = ()) -> dict[str, Any]:
    return {"id": claim_id, "runs": list(runs), **check.to_dict(), "details": list(details)}


def _not_shown(claim: str, why: str) -> ClaimCheck:
    return ClaimCheck(claim=claim, held=None, verdict="not shown", evidence=why)


def _cells_text(cells: Sequence[str]) -> str:
    return " and ".join(CELL_LABELS[c] for c in cells)


def _per_cell_details(a: dict[str, list[dict]], b: dict[str, list[dict]], cells: Sequence[str], alpha: float,
                      what: str) -> list[str]:
    lines = []
    for c in cells:
        x, y = paired_flags(a.get(c, []), b.get(c, []))
        if x:
            t = mcnemar_exact(x, y, alpha=alpha)
            lines.append(f"{CELL_LABELS[c]}: {what} {t.before} -> {t.after}, change {t.delta.format(3)}, "
                         f"exact McNemar p={t.p_value:.2g} (n={len(x)})")
    return lines


def _params(r: RunRecords) -> str:
    n = r.trainable_parameters
    return f"{n:,} trainable parameters" if n is not None else "trainable parameters unknown"


def _claims(run: TwoByTwoRun) -> list[dict[str, Any]]:
    sweep = [r for r in run.runs if r.kind == "sweep"]
    out = [_claim_no_ood_forgetting(run, r) for r in sweep]
    # lower learning rate, same method and epochs: adjacent pairs
    groups: dict[tuple[str, int], list[RunRecords]] = {}
    for r in sweep:
        groups.setdefault((r.method_name, r.epochs), []).append(r)
    for (_, _), members in groups.items():
        members = sorted([m for m in members if m.lr is not None], key=lambda m: m.lr)  # type: ignore[arg-type,return-value]
        for low, high in zip(members, members[1:]):
            out.append(_claim_forgets_less(
                run, low, high, "lower-lr-forgets-less",
                f"Lowering the learning rate ({low.method_name}, {high.epochs} epoch(s): {high.lr:g} -> {low.lr:g}) "
                "reduces forgetting on OOD images"))
    # fewer trainable parameters, same learning rate and epochs: adjacent pairs by parameter count
    by_lr: dict[tuple[float | None, int], list[RunRecords]] = {}
    for r in sweep:
        by_lr.setdefault((r.lr, r.epochs), []).append(r)
    for (lr, epochs), members in by_lr.items():
        counted = sorted([m for m in members if m.trainable_parameters is not None],
                         key=lambda m: m.trainable_parameters)  # type: ignore[arg-type,return-value]
        for fewer, more in zip(counted, counted[1:]):
            if fewer.trainable_parameters == more.trainable_parameters:
                continue
            lr_text = f"lr {lr:g}" if lr is not None else "default lr"
            out.append(_claim_forgets_less(
                run, fewer, more, "fewer-parameters-forget-less",
                f"Fewer trainable parameters ({fewer.method_name}, {fewer.trainable_parameters:,} vs "
                f"{more.method_name}, {more.trainable_parameters:,}; {lr_text}, {epochs} epoch(s)) reduce "
                "forgetting on OOD images"))
    out += _hybrid_claims(run)
    return out


def _claim_no_ood_forgetting(run: TwoByTwoRun, r: RunRecords) -> dict[str, Any]:
    claim = (f"{r.name} ({r.method_name}, lr {r.lr:g}, {_params(r)}) does not forget on OOD images: accuracy "
             f"changes by at most {run.margin:g}") if r.lr is not None else f"{r.name} does not forget on OOD images"
    before, after = paired_flags(_pooled(run.base, OOD_IMAGE_CELLS), _pooled(r.records, OOD_IMAGE_CELLS))
    if not before:
        return _claim_dict("no-ood-image-forgetting", _not_shown(claim, "no OOD-image sample judged in both the base "
                                                                        "and this run yet"), [r.name])
    check = _check(claim, before, after, run.alpha, "no_change", f"accuracy on {_cells_text(OOD_IMAGE_CELLS)}",
                   f"{r.name} - base", margin=run.margin)
    return _claim_dict("no-ood-image-forgetting", check, [r.name],
                       _per_cell_details(run.base, r.records, OOD_IMAGE_CELLS, run.alpha, "accuracy"))


def _claim_forgets_less(run: TwoByTwoRun, constrained: RunRecords, free: RunRecords, claim_id: str,
                        claim: str) -> dict[str, Any]:
    """The constrained run keeps more OOD-image accuracy than the free one (paired on the same samples)."""
    before, after = paired_flags(_pooled(free.records, OOD_IMAGE_CELLS), _pooled(constrained.records, OOD_IMAGE_CELLS))
    runs = [constrained.name, free.name]
    if not before:
        return _claim_dict(claim_id, _not_shown(claim, "the two runs share no judged OOD-image sample yet"), runs)
    check = _check(claim, before, after, run.alpha, "positive",
                   f"accuracy on {_cells_text(OOD_IMAGE_CELLS)}, {free.name} vs {constrained.name}",
                   f"{constrained.name} - {free.name}")
    details = _per_cell_details(free.records, constrained.records, OOD_IMAGE_CELLS, run.alpha, "accuracy")
    for r in (constrained, free):
        x, y = paired_flags(_pooled(run.base, OOD_IMAGE_CELLS), _pooled(r.records, OOD_IMAGE_CELLS))
        if x:
            f = forgetting_delta(x, y, alpha=run.alpha)
            details.append(f"{r.name}: forgetting on OOD images (base - tuned) {f.delta.format(3)}, "
                           f"p={f.p_value:.2g}")
    return _claim_dict(claim_id, check, runs, details)


def _hybrid_claims(run: TwoByTwoRun) -> list[dict[str, Any]]:
    hybrid = [r for r in run.runs if r.kind == "hybrid"]
    plain = next((r for r in hybrid if float(r.spec.get("ratio", 0.0)) == 0.0), None)
    if plain is None:
        return []
    out = []
    cell = "id_image_ood_text"
    claim = (f"Fine-tuning on the task alone ({plain.name}) forgets {CELL_LABELS[cell]} (task-specific overfitting): "
             "accuracy falls from the base model")
    before, after = paired_flags(run.base.get(cell, []), plain.records.get(cell, []))
    if before:
        check = _check(claim, before, after, run.alpha, "negative", f"accuracy on {CELL_LABELS[cell]}",
                       f"{plain.name} - base")
    else:
        check = _not_shown(claim, "no sample judged in both the base and this run yet")
    out.append(_claim_dict("task-alone-overfits-ood-text", check, [plain.name]))
    for r in hybrid:
        ratio = float(r.spec.get("ratio", 0.0))
        if r is plain or ratio == 0.0:
            continue
        mix = f"r={ratio:g}, by {r.spec.get('mix_by', 'sample')}"
        claim = f"Hybrid data ({mix}) recovers {CELL_LABELS[cell]} against the task alone ({plain.name})"
        before, after = paired_flags(plain.records.get(cell, []), r.records.get(cell, []))
        check = (_check(claim, before, after, run.alpha, "positive", f"accuracy on {CELL_LABELS[cell]}",
                        f"{r.name} - {plain.name}") if before else
                 _not_shown(claim, "the two runs share no judged sample on this cell yet"))
        out.append(_claim_dict("hybrid-recovers-ood-text", check, [r.name, plain.name],
                               _per_cell_details(run.base, r.records, [cell], run.alpha, "accuracy from the base")))
        claim = (f"With hybrid data ({mix}) the target gain stays: target accuracy within {run.margin:g} of the task "
                 f"alone ({plain.name})")
        before, after = paired_flags(plain.records.get(TARGET_CELL, []), r.records.get(TARGET_CELL, []))
        check = (_check(claim, before, after, run.alpha, "no_change", f"accuracy on {CELL_LABELS[TARGET_CELL]}",
                        f"{r.name} - {plain.name}", margin=run.margin) if before else
                 _not_shown(claim, "the two runs share no judged target sample yet"))
        out.append(_claim_dict("hybrid-keeps-target-gain", check, [r.name, plain.name],
                               _per_cell_details(run.base, r.records, [TARGET_CELL], run.alpha, "gain from the base")))
    return out


def _notes(run: TwoByTwoRun) -> list[str]:
    notes = []
    if not run.base_done:
        notes.append("The base evaluation is not finished (base/DONE missing): figures use the samples so far.")
    for r in run.runs:
        if not r.done:
            notes.append(f"{r.name}: not finished (no DONE); its figures use the samples judged so far.")
        if r.trainable_parameters is None:
            notes.append(f"{r.name}: no metrics.json yet, so its trainable-parameter count is unknown.")
    return notes


# ------------------------------------------------------------------------------------------------- writing


def write_twobytwo_report(run_dir: str | Path) -> ReportFiles:
    """Summarise the run folder and write ``metrics.json``, ``report.html``, ``report.md`` and ``plots/``."""
    from .document import write_report
    from .twobytwo_page import build_twobytwo_report

    run_dir = Path(run_dir)
    summary = summarise_twobytwo(run_dir)
    atomic_write_json(run_dir / "metrics.json", summary)
    files = write_report(build_twobytwo_report(summary), run_dir)
    log.info("2x2 report: %s", files.html)
    return files


def is_twobytwo_run(run_dir: Path, config: dict[str, Any]) -> bool:
    return "cells" in config and "sweep" in config and (run_dir / "base").is_dir()


REPORTS.register("2x2", ReportKind("2x2", write_twobytwo_report, is_twobytwo_run,
                                   "2x2 ID/OOD cells, sweeps, Pareto front, hybrid data and claims"),
                 description="2x2 study: ID/OOD image x text grids, sweep heatmaps, Pareto front, hybrid curve, claims")
