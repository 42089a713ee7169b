"""The survey's summary: per model and dataset the MLLM's accuracy and each encoder baseline's, with their Wilson
intervals. The run builds the table from the model folders' metrics.json (:func:`survey_table`, nothing
recomputed) and writes it as the survey folder's metrics.json, which the report reads back (:func:`summarise_survey`);
the page also states the folder and the evaluation settings, read from config.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ...config import read_yaml
from ...errors import DataError
from ...runs import read_json
from .config import model_slug
from ...runs.layout import CONFIG, METRICS


@dataclass
class Accuracy:
    """An accuracy with its interval as the evaluator's metrics.json holds it (None where it has none)."""

    accuracy: float | None
    low: float | None
    high: float | None

    @classmethod
    def from_metrics(cls, d: Mapping[str, Any]) -> Accuracy:
        """From an evaluator's metrics.json (``accuracy_low``, ``accuracy_high``)."""
        return cls(d.get("accuracy"), d.get("accuracy_low"), d.get("accuracy_high"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Accuracy:
        """Inverse of `to_dict`."""
        return cls(d.get("accuracy"), d.get("low"), d.get("high"))

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "low": self.low, "high": self.high}


@dataclass
class EncoderAccuracy(Accuracy):
    """A vision-encoder baseline's accuracy; ``n_train``: the images its linear probe was fitted on (0: zero-shot)."""

    n_train: int = 0

    @classmethod
    def from_metrics(cls, d: Mapping[str, Any]) -> EncoderAccuracy:
        return cls(d.get("accuracy"), d.get("accuracy_low"), d.get("accuracy_high"), d.get("n_train", 0))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncoderAccuracy:
        return cls(d.get("accuracy"), d.get("low"), d.get("high"), d.get("n_train", 0))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "n_train": self.n_train}


@dataclass
class SurveyRow:
    """One model on one dataset: the MLLM as a classifier, and each encoder baseline by kind (zero-shot,
    linear-probe) in the order the evaluator ran them."""

    model: str
    dataset: str
    n: int | None
    mllm: Accuracy
    baselines: dict[str, EncoderAccuracy]

    def accuracy_of(self, kind: str) -> Accuracy | None:
        """The MLLM's accuracy ("mllm") or a baseline's (None: that baseline was not run here)."""
        return self.mllm if kind == "mllm" else self.baselines.get(kind)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "n": self.n, "mllm": self.mllm.to_dict(),
                **{kind: b.to_dict() for kind, b in self.baselines.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurveyRow:
        """Inverse of `to_dict`: every key besides model, dataset, n and mllm is a baseline."""
        return cls(model=str(d["model"]), dataset=str(d["dataset"]), n=d.get("n"), mllm=Accuracy.from_dict(d["mllm"]),
                   baselines={kind: EncoderAccuracy.from_dict(b) for kind, b in d.items()
                              if kind not in ("model", "dataset", "n", "mllm")})


@dataclass
class SurveyTable:
    models: list[str]
    datasets: list[str]
    rows: list[SurveyRow]

    def to_dict(self) -> dict[str, Any]:
        return {"models": list(self.models), "datasets": list(self.datasets), "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurveyTable:
        return cls([str(m) for m in d.get("models") or []], [str(x) for x in d.get("datasets") or []],
                   [SurveyRow.from_dict(r) for r in d.get("rows") or []])


@dataclass
class SurveySettings:
    """The evaluation settings the page states (from the config's ``eval:``)."""

    split: str | None = None
    mode: str | None = None
    limit: int | None = None
    probe_train_limit: int | None = None


@dataclass
class SurveySummary:
    """The survey folder read back: its table (metrics.json) and what the page states besides."""

    run_dir: str
    name: str
    settings: SurveySettings
    table: SurveyTable

    def to_dict(self) -> dict[str, Any]:
        return self.table.to_dict()


def survey_table(root: Path, models: list[str], datasets: list[str]) -> SurveyTable:
    """The survey's rows from the model folders' metrics.json (nothing recomputed)."""
    rows = []
    for entry in models:
        metrics = read_json(root / model_slug(entry) / METRICS)
        for name in datasets:
            d = (metrics.get("datasets") or {}).get(name)
            if d is None:
                continue
            rows.append(SurveyRow(model=entry, dataset=name, n=d.get("n"), mllm=Accuracy.from_metrics(d),
                                  baselines={kind: EncoderAccuracy.from_metrics(b)
                                             for kind, b in (d.get("baselines") or {}).items()}))
    return SurveyTable(models, datasets, rows)


def summarise_survey(run_dir: str | Path) -> SurveySummary:
    """The survey folder read back: its table (metrics.json, written when the last model was evaluated), with its
    name and settings from config.yaml."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).is_file():
        raise DataError(f"{run_dir} has no metrics.json: the survey did not finish; rerun the same `unforget study "
                        "survey` command to complete it")
    config = read_yaml(run_dir / CONFIG)
    settings = config.get("eval") or {}
    return SurveySummary(run_dir=str(run_dir), name=config.get("name", "survey"),
                         settings=SurveySettings(**{k: settings.get(k) for k in ("split", "mode", "limit",
                                                                                 "probe_train_limit")}),
                         table=SurveyTable.from_dict(read_json(run_dir / METRICS)))
