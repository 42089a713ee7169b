"""The 2x2 run folder read back: the config, each cell's judged records of the base model and of every run, their
probe and language rows. Records are paired by (dataset, id) across evaluations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...config import read_yaml
from ...errors import DataError
from ...reports.language import language_row
from ..probing import probe_row
from ...runs import read_json, read_jsonl
from .config import CELL_KEYS
from ...runs.layout import CONFIG, DONE, METRICS, SAMPLES
from ...runs.records import judged

Record = dict[str, Any]  # one judged sample of samples.jsonl


@dataclass
class RunRecords:
    """One fine-tuning run as found on disk; ``records[cell]`` lists its judged answers on that cell."""

    name: str
    spec: dict[str, Any]  # its spec.json (plan.RunSpec.to_dict() with the lr used and the seed)
    metrics: dict[str, Any] | None  # its metrics.json (written when it finished)
    done: bool
    records: dict[str, list[Record]] = field(default_factory=dict)
    probe: dict[str, Any] | None = None  # its probe.jsonl row (after training)
    language: dict[str, Any] | None = None  # its language.jsonl row (after training)
    text_records: list[Record] = field(default_factory=list)  # its judged answers on the text set

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
    def ratio(self) -> float:
        return float(self.spec.get("ratio", 0.0))

    @property
    def trainable_parameters(self) -> int | None:
        return (self.metrics or {}).get("trainable_parameters")


@dataclass
class TwoByTwoRun:
    path: Path
    config: dict[str, Any]  # config.yaml as written (read back as a mapping: older folders may lack new fields)
    cells: dict[str, str]  # cell key -> dataset reference
    alpha: float
    margin: float
    base: dict[str, list[Record]]
    base_done: bool
    runs: list[RunRecords]
    names: dict[str, str] = field(default_factory=dict)  # cell key -> the dataset name its records carry
    base_probe: dict[str, Any] | None = None
    text_dataset: str | None = None  # the "text" set among extra_datasets (language forgetting), if any
    base_language: dict[str, Any] | None = None
    base_text: list[Record] = field(default_factory=list)


def sweep_method_names(config: dict[str, Any]) -> list[Any]:
    """The sweep's method names as config.yaml lists them."""
    return [m.get("name") for m in ((config.get("sweep") or {}).get("methods") or [])]



def paired_flags(before: Sequence[Record], after: Sequence[Record]) -> tuple[list[bool], list[bool]]:
    """Correctness of the samples judged in both lists, matched by (dataset, id), in ``before``'s order."""
    after_by_id = {(r["dataset"], r["id"]): r for r in judged(after)}
    a, b = [], []
    for r in judged(before):
        other = after_by_id.get((r["dataset"], r["id"]))
        if other is not None:
            a.append(bool(r["correct"]))
            b.append(bool(other["correct"]))
    return a, b


def pooled(per_cell: dict[str, list[Record]], cells: Sequence[str]) -> list[Record]:
    return [r for c in cells for r in per_cell.get(c, [])]


def _by_cell(records: Sequence[Record], names: dict[str, str]) -> dict[str, list[Record]]:
    """Records by cell; ``names``: cell -> the dataset name its records carry."""
    key_of = {name: key for key, name in names.items()}
    out: dict[str, list[Record]] = {key: [] for key in names}
    for r in records:
        key = key_of.get(r.get("dataset"))
        if key is not None:
            out[key].append(r)
    return out


def read_twobytwo_run(run_dir: str | Path) -> TwoByTwoRun:
    path = Path(run_dir)
    config_path = path / CONFIG
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
    base_records = [r for r in read_jsonl(path / "base" / SAMPLES) if r.get("epoch", 0) == 0]
    text = next((str(d) for d in cfg.get("extra_datasets") or [] if str(d).split("?", 1)[0] == "text"), None)
    if not base_records:
        raise DataError(f"{path / 'base' / SAMPLES} is missing or empty: the base model was not evaluated "
                        "yet; rerun `unforget study 2x2` on this config to finish it")
    runs = []
    for kind in ("sweep", "hybrid"):
        folder = path / kind
        if not folder.is_dir():
            continue
        for sub in sorted(p for p in folder.iterdir() if (p / "spec.json").is_file()):
            spec = read_json(sub / "spec.json")
            metrics = read_json(sub / METRICS) if (sub / METRICS).exists() else None
            records = read_jsonl(sub / SAMPLES)
            runs.append(RunRecords(name=f"{kind}/{sub.name}", spec=spec, metrics=metrics, done=(sub / DONE).exists(),
                                   records=_by_cell(records, names), probe=probe_row(sub),
                                   language=language_row(sub), text_records=_of_dataset(records, text)))
    runs.sort(key=lambda r: _plan_order(cfg, r))
    return TwoByTwoRun(path=path, config=cfg, cells=cells, alpha=float(cfg.get("alpha", 0.05)),
                       margin=float(cfg.get("margin", 0.05)), base=_by_cell(base_records, names),
                       base_done=(path / "base" / DONE).exists(), runs=runs, names=names,
                       base_probe=probe_row(path / "base", epoch=0), text_dataset=text,
                       base_language=language_row(path / "base", epoch=0),
                       base_text=_of_dataset(base_records, text))


def is_twobytwo_run(run_dir: Path, config: dict[str, Any]) -> bool:
    """A 2x2 folder written before run.json existed: its config names cells and a sweep, and it has base/."""
    return "cells" in config and "sweep" in config and (run_dir / "base").is_dir()


def _of_dataset(records: Sequence[Record], dataset: str | None) -> list[Record]:
    # the text set loads under its reference ("text", "text?kinds=arithmetic"), which its records carry
    return [r for r in records if dataset is not None and r.get("dataset") == dataset]


def _plan_order(cfg: dict[str, Any], run: RunRecords) -> tuple:
    """Runs in the config's order: sweep methods as listed, then learning rate, epochs; hybrid by ratio."""
    methods = sweep_method_names(cfg)
    method_rank = methods.index(run.method_name) if run.method_name in methods else len(methods)
    return (run.kind != "sweep", method_rank, run.lr if run.lr is not None else 0.0, run.epochs,
            float(run.spec.get("ratio", 0.0)), str(run.spec.get("mix_by", "")))
