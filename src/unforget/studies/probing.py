"""The judge-free forgetting probe inside a study: made once per study, base distributions kept in the study folder
(``probe_base.safetensors``), one probe.jsonl row per evaluation point (epoch, run or task step), written once so
that a resumed study reads it back instead of measuring again."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from ..evaluation.config import ProbeConfig
from ..evaluation.probe import BASE_FILE, ForgettingProbe
from ..models.loading import LoadedModel
from ..reports.probe import PROBE_FILE, probe_row
from ..runs import RunDir


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
