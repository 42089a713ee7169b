"""The Model Tailor study's summary (metrics.json) and report, computed from its run folder only.

Inputs (layout in :mod:`unforget.studies.tailor`): ``config.yaml``; ``base/samples.jsonl``; per target
``finetune/<target>/samples.jsonl``; per tailoring run ``<group>/<run>/spec.json``, ``tailor.json``,
``samples.jsonl`` and ``DONE``.

Per-sample scores are recomputed from the records and paired by (dataset, id) across models: correctness for
classification and VQA sets, CIDEr-D for caption sets (document frequencies from the set's references, so a
sample's score does not depend on the other models' captions).

- **retention** (original tasks, share of the base model): per dataset ``mean(tailored) / mean(base)``
  (`stats.retention`, paired bootstrap); pooled over the original datasets after dividing each dataset's scores by
  the base model's mean there, which makes the pooled figure the sample-weighted mean of the per-dataset
  retentions, whatever each dataset's scale (accuracy or CIDEr);
- **reach** (target tasks, share of the fine-tuned model): the same with the fine-tuned model as reference;
- the paper's headline as verdicts on those intervals: at sparsity <= 10% Model Tailor keeps >= 99% and reaches
  >= 97% ("held" when the whole interval clears the bar, "not held" when it lies wholly below, else "not shown").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import __version__
from ..config import read_yaml
from ..errors import DataError
from ..runs import atomic_write_json, read_json, read_jsonl
from ..stats import ClaimCheck, Estimate, bootstrap_interval, json_float, retention, wilson_interval
from .base import REPORTS, ReportKind
from .document import (
    BulletList,
    Claim,
    ClaimList,
    Figure,
    Paragraph,
    Report,
    ReportFiles,
    Section,
    Table,
    figure_name,
    format_estimate,
    format_number,
    write_report,
)
from .names import display_names, named_refs
from .plots import LinePanel, ReferenceLine, Series, line_plot

log = logging.getLogger(__name__)

MULTI = "multi"  # the rule of unforget.studies.tailor (not imported: that pulls in torch)
HEADLINE_METHOD = "model-tailor"


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class Evaluation:
    """One model's records, by dataset."""

    label: str
    folder: Path
    done: bool
    records: dict[str, list[dict[str, Any]]]


@dataclass
class TailoredRun(Evaluation):
    group: str = ""
    name: str = ""
    method: str = ""
    sparsity: float | None = None
    targets: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None  # tailor.json


@dataclass
class TailorStudyRun:
    path: Path
    config: dict[str, Any]
    original: list[str]
    targets: dict[str, str]  # target name -> dataset
    alpha: float
    base: Evaluation
    finetuned: dict[str, Evaluation]
    runs: list[TailoredRun]

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.runs))

    @property
    def names(self) -> dict[str, str]:
        """Each dataset reference's label on the page (:func:`.names.display_names`)."""
        return display_names([*self.original, *self.targets.values()])


def _by_dataset(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["dataset"], []).append(r)
    return out


def _evaluation(label: str, folder: Path) -> Evaluation:
    return Evaluation(label, folder, (folder / "DONE").exists(), _by_dataset(read_jsonl(folder / "samples.jsonl")))


def read_tailor_run(run_dir: str | Path) -> TailorStudyRun:
    path = Path(run_dir)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{path} has no config.yaml: it is not a tailor study folder (run `unforget study tailor`)")
    cfg = read_yaml(config_path)
    targets = {str(t["name"]): str(t["dataset"]) for t in cfg.get("targets") or []}
    if not targets:
        raise DataError(f"{config_path}: no `targets:` listed, so there is nothing to report")
    base = _evaluation("base", path / "base")
    if not base.records:
        raise DataError(f"{path / 'base' / 'samples.jsonl'} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study tailor` on this config to finish it")
    finetuned = {t: _evaluation(f"fine-tuned ({t})", path / "finetune" / t) for t in targets}
    runs = []
    for group in [*targets, MULTI]:
        folder = path / group
        if not folder.is_dir():
            continue
        for sub in sorted(p for p in folder.iterdir() if (p / "spec.json").is_file()):
            spec = read_json(sub / "spec.json")
            summary = read_json(sub / "tailor.json") if (sub / "tailor.json").is_file() else None
            ev = _evaluation(sub.name, sub)
            runs.append(TailoredRun(sub.name, sub, ev.done, ev.records, group=group, name=str(spec["name"]),
                                    method=str(spec["method"]), sparsity=spec.get("sparsity"),
                                    targets=list(spec.get("targets") or [group]), summary=summary))
    order = {m.get("name"): i for i, m in enumerate(cfg.get("methods") or [])}
    runs.sort(key=lambda r: ([*targets, MULTI].index(r.group), order.get(r.name, len(order)), r.sparsity or 0.0))
    return TailorStudyRun(path=path, config=cfg, original=[str(d) for d in cfg.get("original") or []],
                          targets=targets, alpha=float(cfg.get("alpha", 0.05)), base=base, finetuned=finetuned,
                          runs=runs)


# -------------------------------------------------------------------------------------------------- scores


def is_caption(records: Sequence[dict[str, Any]]) -> bool:
    return any(r.get("task") == "caption" for r in records)


def sample_scores(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per sample id: 1/0 correctness (classification, VQA; unjudged left out) or CIDEr-D (caption sets)."""
    if is_caption(records):
        from ..evaluation.captioning import caption_record_scores

        return caption_record_scores(records)
    return {r["id"]: float(bool(r["correct"])) for r in records
            if not r.get("skipped") and r.get("correct") is not None}


def paired_scores(reference: dict[str, float], other: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    ids = [i for i in reference if i in other]
    return np.array([reference[i] for i in ids]), np.array([other[i] for i in ids])


def score_estimate(records: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any] | None:
    """The dataset's score with its interval: accuracy (Wilson) or mean CIDEr-D (bootstrap)."""
    scores = np.array(list(sample_scores(records).values()))
    if scores.size == 0:
        return None
    if is_caption(records):
        est = bootstrap_interval(lambda s: s.mean(axis=-1), scores, confidence=1.0 - alpha)
        return {**est.to_dict(), "metric": "cider"}
    return {**wilson_interval(int(scores.sum()), scores.size, 1.0 - alpha).to_dict(), "metric": "accuracy"}


def relative_score(reference: Evaluation, other: Evaluation, datasets: Sequence[str],
                   alpha: float, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``other`` as a share of ``reference`` on ``datasets``: per dataset and pooled (see the module doc).
    ``names``: the datasets' labels in the notes (default: the references)."""
    names = names or {}
    per_dataset: dict[str, Any] = {}
    pooled_ref: list[np.ndarray] = []
    pooled_other: list[np.ndarray] = []
    notes = []
    for d in datasets:
        ref, oth = paired_scores(sample_scores(reference.records.get(d, [])),
                                 sample_scores(other.records.get(d, [])))
        if ref.size == 0:
            per_dataset[d] = None
            notes.append(f"{names.get(d, d)}: no sample scored by both models")
            continue
        if ref.mean() == 0:
            per_dataset[d] = None
            notes.append(f"{names.get(d, d)}: the {reference.label} model scores 0, so a share of it is undefined")
            continue
        per_dataset[d] = retention(ref, oth, confidence=1.0 - alpha).to_dict()
        pooled_ref.append(ref / ref.mean())
        pooled_other.append(oth / ref.mean())
    pooled = None
    if pooled_ref:
        pooled = retention(np.concatenate(pooled_ref), np.concatenate(pooled_other), confidence=1.0 - alpha).to_dict()
    return {"pooled": pooled, "per_dataset": per_dataset, "notes": notes}


# ------------------------------------------------------------------------------------------------- summary


def at_least(claim: str, estimate: dict[str, Any] | None, bar: float, subject: str) -> ClaimCheck:
    """Verdict on "``subject`` is at least ``bar``" from an interval: held when its low end clears the bar, not
    held when its high end is below it, otherwise not shown."""
    if estimate is None or estimate.get("value") is None:
        return ClaimCheck(claim, None, "not shown", f"{subject} is undefined (no paired samples, or a reference "
                                                    "score of 0)")
    est = Estimate.from_dict(estimate)
    text = (f"{subject} {100 * est.value:.1f}% [{100 * est.low:.1f}%, {100 * est.high:.1f}%] "
            f"({100 * est.confidence:.0f}% paired bootstrap interval, n={est.n})")
    if est.low >= bar:
        return ClaimCheck(claim, True, "held", f"{text}: the interval lies above {100 * bar:g}%")
    if est.high < bar:
        return ClaimCheck(claim, False, "not held", f"{text}: the interval lies below {100 * bar:g}%")
    return ClaimCheck(claim, None, "not shown", f"{text}: the interval crosses {100 * bar:g}%")


def _group_targets(run: TailorStudyRun, group: str) -> list[str]:
    return list(run.targets) if group == MULTI else [group]


def _reach(run: TailorStudyRun, other: Evaluation, targets: Sequence[str]) -> dict[str, Any]:
    """Reach on each target (against its own fine-tuned model) and pooled over the group's targets."""
    per_target = {t: relative_score(run.finetuned[t], other, [run.targets[t]], run.alpha, run.names)
                  for t in targets}
    pooled_ref, pooled_other = [], []
    for t in targets:
        d = run.targets[t]
        ref, oth = paired_scores(sample_scores(run.finetuned[t].records.get(d, [])),
                                 sample_scores(other.records.get(d, [])))
        if ref.size and ref.mean() > 0:
            pooled_ref.append(ref / ref.mean())
            pooled_other.append(oth / ref.mean())
    pooled = (retention(np.concatenate(pooled_ref), np.concatenate(pooled_other), confidence=1.0 - run.alpha)
              .to_dict() if pooled_ref else None)
    return {"pooled": pooled, "per_target": {t: r["per_dataset"][run.targets[t]] for t, r in per_target.items()},
            "notes": [n for r in per_target.values() for n in r["notes"]]}


def _scores(run: TailorStudyRun, ev: Evaluation, datasets: Sequence[str]) -> dict[str, Any]:
    return {d: score_estimate(ev.records.get(d, []), run.alpha) for d in datasets}


def _run_row(run: TailorStudyRun, sub: TailoredRun) -> dict[str, Any]:
    targets = _group_targets(run, sub.group)
    datasets = [*run.original, *(run.targets[t] for t in targets)]
    summary = sub.summary or {}
    return {
        "group": sub.group, "folder": sub.label, "name": sub.name, "method": sub.method, "sparsity": sub.sparsity,
        "done": sub.done, "changed_fraction": json_float(summary.get("changed_fraction")),
        "options": summary.get("options"), "seconds": summary.get("seconds"),
        "retention": relative_score(run.base, sub, run.original, run.alpha, run.names),
        "reach": _reach(run, sub, targets),
        "scores": _scores(run, sub, datasets),
    }


def _headline(run: TailorStudyRun, group: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    head = run.config.get("headline") or {}
    limit, keep, reach = float(head.get("sparsity", 0.1)), float(head.get("keep", 0.99)), float(head.get("reach", 0.97))
    who = "every target at once" if group == MULTI else f"target {group}"
    keep_claim = (f"Model Tailor ({who}) at sparsity <= {100 * limit:g}% keeps >= {100 * keep:g}% of the base "
                  f"model's performance on the original tasks ({', '.join(run.names[d] for d in run.original)})")
    reach_claim = (f"Model Tailor ({who}) at sparsity <= {100 * limit:g}% reaches >= {100 * reach:g}% of the "
                   "fine-tuned model's performance on the target task"
                   + ("s" if group == MULTI else ""))
    candidates = [r for r in rows if r["method"] == HEADLINE_METHOD and r["done"] and r["sparsity"] is not None
                  and r["sparsity"] <= limit + 1e-12]
    if not candidates:
        why = f"no finished model-tailor run at sparsity <= {100 * limit:g}% in this group"
        return [{"group": group, "id": "keep", **ClaimCheck(keep_claim, None, "not shown", why).to_dict()},
                {"group": group, "id": "reach", **ClaimCheck(reach_claim, None, "not shown", why).to_dict()}]
    # the paper's operating point: the largest sparsity within the bound (one test, no search over the sweep)
    row = max(candidates, key=lambda r: r["sparsity"])
    at = f"at {100 * row['sparsity']:g}% ({row['folder']})"
    keep_check = at_least(keep_claim, row["retention"]["pooled"], keep, f"retention {at}")
    reach_check = at_least(reach_claim, row["reach"]["pooled"], reach, f"reach {at}")
    details_keep = [f"{run.names.get(d, d)}: {format_estimate(e)}" for d, e in row["retention"]["per_dataset"].items()]
    details_reach = [f"{t}: {format_estimate(e)}" for t, e in row["reach"]["per_target"].items()]
    return [{"group": group, "id": "keep", "sparsity": row["sparsity"], **keep_check.to_dict(),
             "details": details_keep + row["retention"]["notes"]},
            {"group": group, "id": "reach", "sparsity": row["sparsity"], **reach_check.to_dict(),
             "details": details_reach + row["reach"]["notes"]}]


def summarise_tailor(run_dir: str | Path) -> dict[str, Any]:
    """The study's numbers, computed from the run folder only, as a JSON-ready dict (written as metrics.json)."""
    run = read_tailor_run(run_dir)
    all_sets = [*run.original, *run.targets.values()]
    finetuned = {}
    for t, ev in run.finetuned.items():
        finetuned[t] = {"done": ev.done,
                        "retention": relative_score(run.base, ev, run.original, run.alpha, run.names),
                        "gain_over_base": relative_score(run.base, ev, [run.targets[t]], run.alpha,
                                                         run.names)["pooled"],
                        "scores": _scores(run, ev, [*run.original, run.targets[t]])}
    groups = {}
    claims = []
    for group in run.groups:
        rows = [_run_row(run, sub) for sub in run.runs if sub.group == group]
        targets = _group_targets(run, group)
        groups[group] = {"targets": targets, "base_reach": _reach(run, run.base, targets), "runs": rows}
        claims += _headline(run, group, rows)
    planned = _planned_runs(run)
    found = {(r.group, r.label) for r in run.runs if r.done}
    return {
        "study": "tailor", "unforget": __version__, "run_dir": str(run.path),
        "name": run.config.get("name", run.path.name), "model": (run.config.get("model") or {}).get("name"),
        "original": run.original, "targets": run.targets, "alpha": run.alpha, "confidence": 1.0 - run.alpha,
        "headline": run.config.get("headline"), "sparsities": run.config.get("sparsities"),
        "eval": {k: (run.config.get("eval") or {}).get(k) for k in ("split", "mode", "limit", "judges", "template")},
        "base": {"done": run.base.done, "scores": _scores(run, run.base, all_sets)},
        "finetuned": finetuned, "groups": groups, "claims": claims,
        "missing_runs": [f"{g}/{name}" for g, name in planned if (g, name) not in found],
    }


def _planned_runs(run: TailorStudyRun) -> list[tuple[str, str]]:
    """(group, folder) of every run the config asks for (the rule of ``studies.tailor.plan``)."""
    cfg = run.config
    groups = [t for t in run.targets] if cfg.get("single_task", True) else []
    if cfg.get("multi_task", True) and len(run.targets) > 1:
        groups.append(MULTI)
    sweeping = {"model-tailor", "magnitude"}
    out = []
    for g in groups:
        for m in cfg.get("methods") or []:
            sweep = m.get("sweep")
            if sweep is None:
                sweep = m.get("method") in sweeping
            if sweep:
                out += [(g, f"{m['name']}-{s * 100:.6g}pct") for s in cfg.get("sparsities") or []]
            else:
                out.append((g, str(m["name"])))
    return out


# ---------------------------------------------------------------------------------------------------- page


def _pct(estimate: dict[str, Any] | None) -> str:
    if not estimate or estimate.get("value") is None:
        return "-"
    low, high = estimate.get("low"), estimate.get("high")
    text = f"{100 * estimate['value']:.1f}%"
    if low is None or high is None:
        return text
    return f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def _value(estimate: dict[str, Any] | None, key: str = "value") -> float | None:
    if not estimate or estimate.get(key) is None:
        return None
    return 100.0 * float(estimate[key])


def _sparsity_label(row: dict[str, Any]) -> str:
    return f"{100 * row['sparsity']:g}%" if row.get("sparsity") is not None else "-"


def _names(summary: dict[str, Any]) -> dict[str, str]:
    return display_names([*summary["original"], *summary["targets"].values()])


def _group_title(group: str, summary: dict[str, Any]) -> str:
    if group == MULTI:
        return "All targets at once: " + ", ".join(summary["groups"][group]["targets"])
    return f"Target {group} ({_names(summary)[summary['targets'][group]]})"


def _tradeoff_figure(group: str, data: dict[str, Any], summary: dict[str, Any]) -> Figure | Paragraph:
    """Retention on the original tasks against reach on the target(s), one line per method over the sweep."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in data["runs"]:
        by_name.setdefault(row["name"], []).append(row)
    series = []
    for name, rows in by_name.items():
        # a point needs its x: runs whose reach is undefined (fine-tuned model scores 0) are left out
        rows = sorted((r for r in rows if _value(r["reach"]["pooled"]) is not None), key=lambda r: r["sparsity"] or 0.0)
        if not rows:
            continue
        series.append(Series(name, [_value(r["reach"]["pooled"]) for r in rows],
                             [_value(r["retention"]["pooled"]) for r in rows],
                             [_value(r["retention"]["pooled"], "low") for r in rows],
                             [_value(r["retention"]["pooled"], "high") for r in rows],
                             linestyle="-" if len(rows) > 1 else "none", marker="o" if len(rows) > 1 else "s"))
    targets = data["targets"]
    ft_retention = [summary["finetuned"][t]["retention"]["pooled"] for t in targets]
    if len(targets) == 1 and ft_retention[0] is not None:
        series.append(Series("fine-tuned", [100.0], [_value(ft_retention[0])], [_value(ft_retention[0], "low")],
                             [_value(ft_retention[0], "high")], linestyle="none", marker="*"))
    base_reach = data["base_reach"]["pooled"]
    if base_reach is not None:
        series.append(Series("base", [_value(base_reach)], [100.0], linestyle="none", marker="D"))
    if not any(s.label not in ("fine-tuned", "base") for s in series):
        return Paragraph("No retention-vs-reach plot: the fine-tuned model scores 0 on the target, so no tailored "
                         "model's share of it is defined.")
    head = summary.get("headline") or {}
    refs = [ReferenceLine(f"keep {100 * float(head.get('keep', 0.99)):g}%", 100 * float(head.get("keep", 0.99)))]
    panel = LinePanel(_group_title(group, summary), series, refs, ylabel="original tasks, % of base",
                      xlabel="target task" + ("s" if group == MULTI else "") + ", % of fine-tuned")
    png = line_plot([panel], title="Retention vs reach", dodge=0.0)
    return Figure(figure_name(f"tradeoff-{group}"), png,
                  "Each point is one tailored model: x = target score as a share of the fine-tuned model, y = "
                  "original-task score as a share of the base model (pooled over the original datasets), with its "
                  f"{100 * summary['confidence']:.0f}% paired bootstrap interval. Lines join one method's sparsities "
                  "(more grafted weights: further right). The paper's target: top right, above the dashed line.")


def _sparsity_figure(group: str, data: dict[str, Any], summary: dict[str, Any]) -> Figure:
    panels = []
    for key, title, ylabel in (("retention", "Original tasks", "% of base"), ("reach", "Target", "% of fine-tuned")):
        by_name: dict[str, list[dict[str, Any]]] = {}
        for row in data["runs"]:
            by_name.setdefault(row["name"], []).append(row)
        series = []
        for name, rows in by_name.items():
            rows = sorted((r for r in rows if r["changed_fraction"] is not None), key=lambda r: r["changed_fraction"])
            if not rows:
                continue
            series.append(Series(name, [100 * r["changed_fraction"] for r in rows],
                                 [_value(r[key]["pooled"]) for r in rows],
                                 [_value(r[key]["pooled"], "low") for r in rows],
                                 [_value(r[key]["pooled"], "high") for r in rows],
                                 linestyle="-" if len(rows) > 1 else "none"))
        panels.append(LinePanel(title, series, [ReferenceLine("100%", 100.0)], ylabel=ylabel,
                                xlabel="changed weights, % of the considered ones"))
    return Figure(figure_name(f"sparsity-{group}"), line_plot(panels, title=_group_title(group, summary), dodge=0.0),
                  "Both shares against the fraction of the considered weights the method changed (grafting methods: "
                  "the sparsity; merges: all entries their task vectors touch).")


def _group_table(group: str, data: dict[str, Any], summary: dict[str, Any]) -> Table:
    targets = data["targets"]
    target_sets = [summary["targets"][t] for t in targets]
    names = _names(summary)
    columns = ["model", "sparsity", "changed", "original tasks (% of base)", "target (% of fine-tuned)",
               *[names[d] for d in [*summary["original"], *target_sets]]]
    rows = [["base", "-", "0%", "100%", _pct(data["base_reach"]["pooled"]),
             *[format_estimate(summary["base"]["scores"].get(d)) for d in [*summary["original"], *target_sets]]]]
    for t in targets:
        ft = summary["finetuned"][t]
        rows.append([f"fine-tuned ({t})", "-", "100%", _pct(ft["retention"]["pooled"]),
                     "100%" if len(targets) == 1 else f"{t}: 100%",
                     *[format_estimate(ft["scores"].get(d)) for d in summary["original"]],
                     *[format_estimate(ft["scores"].get(d)) if d == summary["targets"][t] else "-"
                       for d in target_sets]])
    for row in data["runs"]:
        rows.append([row["name"] + ("" if row["done"] else " (unfinished)"), _sparsity_label(row),
                     f"{100 * row['changed_fraction']:.2f}%" if row["changed_fraction"] is not None else "-",
                     _pct(row["retention"]["pooled"]), _pct(row["reach"]["pooled"]),
                     *[format_estimate(row["scores"].get(d)) for d in [*summary["original"], *target_sets]]])
    return Table(columns, rows, "Shares with paired bootstrap intervals; per-dataset scores are accuracy (Wilson "
                                "interval) or CIDEr-D (bootstrap interval) for caption sets.")


def _cost_table(summary: dict[str, Any]) -> Table:
    stages = ["calibrate", "score", "mask", "compensate", "merge", "write"]
    rows = []
    for group, data in summary["groups"].items():
        for row in data["runs"]:
            seconds = row.get("seconds") or {}
            rows.append([group, row["folder"], *[format_number(seconds.get(s), 2) for s in stages]])
    return Table(["group", "run", *[f"{s} (s)" for s in stages]], rows,
                 "Wall-clock seconds per stage of each tailoring run (from its tailor.json).")


def build_tailor_report(summary: dict[str, Any]) -> Report:
    refs = [*summary["original"], *summary["targets"].values()]
    names = _names(summary)
    report = Report(title=f"Model Tailor study: {summary['name']}", facts=[
        ("run folder", summary["run_dir"]), ("model", str(summary["model"])),
        ("original tasks", ", ".join(names[d] for d in summary["original"])),
        ("targets", ", ".join(f"{t} ({names[d]})" for t, d in summary["targets"].items())),
        ("sparsities", ", ".join(f"{100 * s:g}%" for s in summary.get("sparsities") or [])),
        ("evaluation", f"{summary['eval'].get('split')} split, limit {summary['eval'].get('limit')}, "
                       f"{summary['eval'].get('mode')} mode"),
    ])
    if any(names[d] != d for d in refs):
        report.facts.insert(4, ("dataset references", named_refs(refs, names)))
    claims = [Claim(c["claim"], c["verdict"], c["evidence"], list(c.get("details") or [])) for c in summary["claims"]]
    report.sections.append(Section("Headline", [
        Paragraph("Model Tailor (arXiv 2402.12048) reports that grafting at most 10% of the fine-tuned weights onto "
                  "the base model keeps about 99% of its original-task performance and reaches about 97% of the "
                  "fine-tuned model's on the target. Verdicts below come from the paired bootstrap intervals of "
                  "those shares at the largest swept sparsity within the bound."),
        ClaimList(claims)]))
    for group, data in summary["groups"].items():
        blocks: list[Any] = [_group_table(group, data, summary), _tradeoff_figure(group, data, summary),
                             _sparsity_figure(group, data, summary)]
        notes = sorted({n for row in data["runs"] for n in row["retention"]["notes"] + row["reach"]["notes"]})
        if notes:
            blocks.append(BulletList(notes))
        report.sections.append(Section(_group_title(group, summary), blocks))
    ft_rows = [[t, _pct(ft["retention"]["pooled"]), _pct(ft["gain_over_base"])]
               for t, ft in summary["finetuned"].items()]
    report.sections.append(Section("Fine-tuned models", [Table(
        ["target", "original tasks (% of base)", "target (% of base)"], ft_rows,
        "What fine-tuning did before any tailoring: forgetting on the original tasks, gain on the target.")]))
    report.sections.append(Section("Cost", [_cost_table(summary)]))
    if summary["missing_runs"]:
        report.sections.append(Section("Unfinished", [BulletList(summary["missing_runs"])]))
    return report


def write_tailor_report(run_dir: str | Path) -> ReportFiles:
    """Write metrics.json (the summary), report.html, report.md and plots/ into the study folder."""
    summary = summarise_tailor(run_dir)
    atomic_write_json(Path(run_dir) / "metrics.json", summary)
    return write_report(build_tailor_report(summary), run_dir)


def is_tailor_study(run_dir: Path, config: dict[str, Any]) -> bool:
    return "targets" in config and "sparsities" in config and "headline" in config


REPORTS.register("tailor-study", ReportKind("tailor-study", write_tailor_report, is_tailor_study,
                                            "an `unforget study tailor` run"),
                 description="tailor study: retention vs reach per method and sparsity, headline verdicts")
