"""The judge-free forgetting probe inside a study: made once per study, base distributions kept in the study folder
(``probe_base.safetensors``), one probe.jsonl row per evaluation point (epoch, run or task step), written once so
that a resumed study reads it back instead of measuring again."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from scipy.stats import spearmanr

from ..errors import DataError
from ..evaluation.config import ProbeConfig
from ..evaluation.probe import BASE_FILE, ForgettingProbe
from ..models.loading import LoadedModel
from ..runs import RunDir, read_jsonl
from ..runs.layout import PROBE_FILE
from ..stats import json_float


def make_probe(config: ProbeConfig, datasets: Sequence[str], label_set: str | None) -> ForgettingProbe | None:
    """A ForgettingProbe on ``config.datasets`` (default ``datasets``), or None when ``probe.enabled`` is false."""
    if not config.enabled:
        return None
    return ForgettingProbe(config, datasets, label_set=label_set)


def base_file(study: Path) -> Path:
    return study / BASE_FILE


def base_probe_pending(probe: ForgettingProbe | None, study: Path, base_run: RunDir, tag: dict[str, Any]) -> bool:
    """True when the base model must be loaded for the probe: its distributions or its probe row are missing."""
    return probe is not None and (not base_file(study).is_file() or probe_row(base_run.path, **tag) is None)


def load_base_distributions(probe: ForgettingProbe, lm: LoadedModel, study: Path) -> None:
    """Read the stored base distributions (``lm``, a fine-tuned model, gives only the label tokens). The base stage
    of the study writes them; a missing file here means it was deleted while the study ran."""
    if probe.base_logp is not None:
        return
    path = base_file(study)
    if not path.is_file():
        raise DataError(f"{path} is missing: the probe's base distributions come from the base model; rerun the "
                        "study to compute them again")
    probe.prepare(lm, path)


def record_probe(probe: ForgettingProbe | None, lm: LoadedModel, run: RunDir, tag: dict[str, Any],
                 confidence: float) -> dict[str, Any] | None:
    """Measure the probe on ``lm`` and append it with ``tag`` to ``run``'s probe.jsonl, once: a rerun reads it back."""
    if probe is None:
        return None
    done = probe_row(run.path, **tag)
    if done is not None:
        return done
    rec = {**tag, **probe.measure(lm, confidence=confidence).to_dict()}
    with run.appender(PROBE_FILE) as app:
        app.write(rec)
    return rec


# ------------------------------------------------------------------------ probe rows read back for the summaries


def probe_row(folder: Path, **tag: Any) -> dict[str, Any] | None:
    """The last probe.jsonl row of ``folder`` whose fields match ``tag`` (e.g. epoch=2); None when there is none."""
    rows = [r for r in read_jsonl(folder / PROBE_FILE) if all(r.get(k) == v for k, v in tag.items())]
    return rows[-1] if rows else None


def probe_mean(row: dict[str, Any], datasets: Sequence[str], key: str = "kl") -> float | None:
    """Mean of ``key`` over the probe samples of ``datasets`` (per-dataset means weighted by their counts)."""
    parts = [(v["n"], v[key]) for d, v in (row.get("by_dataset") or {}).items()
             if d in datasets and v.get(key) is not None and v.get("n")]
    total = sum(n for n, _ in parts)
    return sum(n * x for n, x in parts) / total if total else None


def rank_correlation(points: Sequence[dict[str, Any]], x: str = "kl", y: str = "forgetting",
                     unit: str = "(method, epoch)") -> dict[str, Any]:
    """Spearman's rho and its p-value (scipy.stats.spearmanr) between ``point[x]`` and ``point[y]``; points missing
    either are left out. ``unit`` names what a point is, for the reason when rho cannot be computed."""
    kept = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    xs, ys = [p[x] for p in kept], [p[y] for p in kept]
    out: dict[str, Any] = {"method": "spearman", "x": x, "y": y, "n": len(kept), "rho": None, "p_value": None,
                           "why_none": None}
    if len(kept) < 3:
        out["why_none"] = f"needs at least 3 {unit} points, has {len(kept)}"
    elif len(set(xs)) < 2 or len(set(ys)) < 2:
        out["why_none"] = f"{x} or {y} is the same at every point: no ranking to correlate"
    else:
        rho, p_value = spearmanr(xs, ys)
        out["rho"], out["p_value"] = json_float(float(rho)), json_float(float(p_value))
    return out
