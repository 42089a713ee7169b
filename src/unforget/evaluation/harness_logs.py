"""Forgetting from the per-sample outputs of other evaluation harnesses: a base and a fine-tuned model's logs of the
same tasks, paired by document id, compared with unforget's paired statistics.

Read formats (each as its harness writes it):

- **lmms-eval** ``--log_samples``: ``<output_path>/<model>/<date>_samples_<task>.jsonl``
  (``lmms_eval/loggers/evaluation_tracker.py: save_results_samples``), one JSON object per document:
  ``doc_id``, ``target`` (str), ``filtered_resps`` (list), ``doc_hash`` ..., and one field per metric, the value
  ``process_results`` returned: a number (``exact_match``, ``anls``...), or a dict that the task aggregates later
  (MME's ``{"question_id", "category", "score"}``: its ``score`` is used; other dicts cannot be scored per sample
  and are listed as skipped). Files with a ``filter`` field (lm-evaluation-harness) are split per filter.
- **VLMEvalKit** score files next to its predictions ``<work_dir>/<model>/[<eval_id>/]<model>_<dataset>.xlsx``:
  multiple choice ``<model>_<dataset>_<judge>_result.{xlsx,tsv,csv}`` (column ``hit``, 0/1,
  ``vlmeval/dataset/image_mcq.py``), yes/no ``<model>_<dataset>_auxmatch.*`` (column ``score``, True/False,
  ``image_yorn.py``), VQA ``<model>_<dataset>_results.*`` (column ``eval_score``, 0..1, ``image_vqa.py``); rows are
  keyed by ``index``. The prediction file alone holds no score: run VLMEvalKit's evaluation first. ``.xlsx`` needs
  openpyxl (VLMEvalKit writes tsv with ``PRED_FORMAT=tsv``).

Samples are matched by document id (lmms-eval ``doc_id``, VLMEvalKit ``index``); ids present on one side only are
counted and listed, never silently dropped, and a task logged on one side only is listed too. Per task and metric:
the change with its interval and a paired test (:func:`unforget.stats.forgetting_delta`: exact McNemar for 0/1
scores, paired bootstrap otherwise, plus the Wilcoxon signed-rank p for continuous scores).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
from scipy import stats as scipy_stats

from ..errors import DataError
from ..runs import atomic_write_text, dumps_strict, prepare_run
from ..runs.provenance import run_info
from ..stats import Estimate, PairedTest, accuracy_estimate, bootstrap_interval, forgetting_delta

Harness = Literal["lmms-eval", "vlmevalkit"]
HARNESS_COMPARE_KIND = "harness-compare"

# lmms-eval / lm-evaluation-harness fields of a logged sample that are not metrics
LMMS_EVAL_FIELDS = frozenset({
    "doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash", "target_hash",
    "input", "success", "token_counts", "filter", "metrics", "task", "split", "input_text", "image_paths",
})
LMMS_EVAL_FILE = re.compile(r"^(?:.*?_)?samples_(?P<task>.+)\.jsonl$")
# VLMEvalKit's per-sample score files: the suffix its evaluate() appends, and the score column there
VLMEVALKIT_SCORES = (
    (re.compile(r"^(?P<stem>.+?)_(?:exact_matching|[^_]+)_result$"), "hit"),  # image_mcq.py
    (re.compile(r"^(?P<stem>.+?)_auxmatch$"), "score"),  # image_yorn.py
    (re.compile(r"^(?P<stem>.+?)_results$"), "eval_score"),  # image_vqa.py
)
VLMEVALKIT_EXTENSIONS = (".xlsx", ".tsv", ".csv")
EVAL_ID = re.compile(r"^T\d{8}_G")  # VLMEvalKit's run folder under the model's: T20250101_Gabc1234
MAX_LISTED_IDS = 50  # unmatched ids kept per task in metrics.json (all are counted)


@dataclass(frozen=True)
class ScoredSample:
    key: str  # the document id
    score: float
    target: str | None = None
    response: str | None = None


@dataclass
class TaskLog:
    """One task's scores from one harness run: ``samples`` by document id; ``unscored``: ids without a score."""

    task: str
    metric: str
    harness: Harness
    file: str
    samples: dict[str, ScoredSample]
    unscored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedMetric:
    task: str
    metric: str
    file: str
    reason: str


@dataclass
class HarnessLogs:
    tasks: list[TaskLog]
    skipped: list[SkippedMetric] = field(default_factory=list)

    def by_key(self) -> dict[tuple[str, str], TaskLog]:
        return {(t.task, t.metric): t for t in self.tasks}


# ------------------------------------------------------------------------------------------------------- reading


def read_harness_logs(path: str | Path, metric: str | None = None) -> HarnessLogs:
    """Every task log in ``path``: a file (lmms-eval ``*samples_*.jsonl``, VLMEvalKit score file) or a folder,
    searched recursively. ``metric`` keeps that metric (lmms-eval field / VLMEvalKit column) only."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist; give a harness output file or folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and _is_log(p))
    if not files:
        raise DataError(f"{root}: no lmms-eval samples file (*_samples_<task>.jsonl, written with --log_samples) "
                        "and no VLMEvalKit score file (*_<judge>_result / *_auxmatch / *_results .xlsx|.tsv|.csv)")
    logs = HarnessLogs([])
    for file in files:
        read = read_lmms_eval_samples if file.suffix == ".jsonl" else read_vlmevalkit_scores
        found = read(file, metric)
        logs.tasks += found.tasks
        logs.skipped += found.skipped
    seen: dict[tuple[str, str], str] = {}
    for t in logs.tasks:
        if (t.task, t.metric) in seen:
            raise DataError(f"task '{t.task}' metric '{t.metric}' is logged twice, in {seen[(t.task, t.metric)]} and "
                            f"{t.file} (two runs in one folder?); point at one run's folder or file")
        seen[(t.task, t.metric)] = t.file
    if metric is not None and not logs.tasks:
        raise DataError(f"{root}: no task logs metric '{metric}'")
    return logs


def _is_log(p: Path) -> bool:
    if p.suffix == ".jsonl":
        return LMMS_EVAL_FILE.match(p.name) is not None
    return p.suffix in VLMEVALKIT_EXTENSIONS and any(rx.match(p.stem) for rx, _ in VLMEVALKIT_SCORES)


def read_lmms_eval_samples(file: str | Path, metric: str | None = None) -> HarnessLogs:
    """One lmms-eval ``--log_samples`` file: a TaskLog per numeric metric (and per filter, where logged)."""
    file = Path(file)
    match = LMMS_EVAL_FILE.match(file.name)
    task = match.group("task") if match else file.stem
    by_metric: dict[tuple[str, str], TaskLog] = {}
    skipped: dict[str, str] = {}
    for lineno, row in _jsonl_rows(file):
        if "doc_id" not in row:
            raise DataError(f"{file}:{lineno}: no 'doc_id'; not an lmms-eval --log_samples line")
        key = str(row["doc_id"])
        name = f"{task}/{row['filter']}" if isinstance(row.get("filter"), str) and row["filter"] != "none" else task
        response = _first_response(row.get("filtered_resps"))
        target = None if row.get("target") is None else str(row["target"])
        for field_name, value in row.items():
            if field_name in LMMS_EVAL_FIELDS or (metric is not None and field_name != metric):
                continue
            score = _lmms_eval_score(value)
            if score is None:
                skipped.setdefault(field_name, f"values like {json.dumps(value, default=str)[:80]} are not a "
                                               "per-sample score (aggregated by the task)")
                continue
            log = by_metric.setdefault((name, field_name), TaskLog(name, field_name, "lmms-eval", str(file), {}))
            if key in log.samples or key in log.unscored:
                raise DataError(f"{file}:{lineno}: doc_id {key} appears twice for metric '{field_name}' (several "
                                "filters logged without a 'filter' field, or two runs appended); keep one")
            if math.isnan(score):
                log.unscored.append(key)
            else:
                log.samples[key] = ScoredSample(key, score, target, response)
    skipped_list = [SkippedMetric(task, m, str(file), why) for m, why in skipped.items()
                    if not any(t.metric == m for t in by_metric.values())]
    return HarnessLogs(list(by_metric.values()), skipped_list)


def _jsonl_rows(file: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read as UTF-8 text: {exc}") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}:{lineno}: not valid JSON ({exc.msg}); a truncated last line means the "
                            "harness was stopped: rerun it or delete the line") from None
        if not isinstance(row, dict):
            raise DataError(f"{file}:{lineno}: expected a JSON object, found {type(row).__name__}")
        yield lineno, row


def _lmms_eval_score(value: Any) -> float | None:
    """A per-sample metric value as a number: bool/int/float, or a dict's numeric ``score`` (MME); else None."""
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _first_response(resps: Any) -> str | None:
    while isinstance(resps, list) and resps:
        resps = resps[0]
    return None if resps is None or isinstance(resps, list) else str(resps)


def read_vlmevalkit_scores(file: str | Path, metric: str | None = None) -> HarnessLogs:
    """One VLMEvalKit score file: a TaskLog of its score column (``metric``, else hit / score / eval_score)."""
    file = Path(file)
    rows = _table_rows(file)
    columns = list(rows[0]) if rows else []
    stem, default = next(((m.group("stem"), col) for rx, col in VLMEVALKIT_SCORES if (m := rx.match(file.stem))),
                         (file.stem, None))
    column = metric or (default if default in columns else next((c for _, c in VLMEVALKIT_SCORES if c in columns),
                                                                None))
    if column is None or column not in columns:
        raise DataError(f"{file}: no score column {'`' + str(column) + '`' if column else '(hit, score, eval_score)'}"
                        f"; columns: {', '.join(columns) or 'none'}. A prediction file holds no score: run "
                        "VLMEvalKit's evaluation (run.py --mode all) and point at its score file, or pass --metric")
    if "index" not in columns:
        raise DataError(f"{file}: no 'index' column to match samples by; columns: {', '.join(columns)}")
    log = TaskLog(_dataset_name(file, stem), column, "vlmevalkit", str(file), {})
    for i, row in enumerate(rows, 2):  # row 1 is the header
        key = _index_key(row["index"])
        if key in log.samples or key in log.unscored:
            raise DataError(f"{file}: row {i}: index {key} appears twice; VLMEvalKit indexes are unique per dataset")
        score = _cell_score(row[column], file, i, column)
        if score is None:
            log.unscored.append(key)
        else:
            log.samples[key] = ScoredSample(key, score, _cell_text(row.get("answer")),
                                            _cell_text(row.get("prediction")))
    return HarnessLogs([log])


def _dataset_name(file: Path, stem: str) -> str:
    """``<model>_<dataset>`` less the model's name (the folder above, or the one above VLMEvalKit's eval id)."""
    folder = file.parent
    model = folder.parent.name if EVAL_ID.match(folder.name) else folder.name
    return stem[len(model) + 1:] if model and stem.startswith(f"{model}_") else stem


def _index_key(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return str(int(float(text))) if re.fullmatch(r"-?\d+(\.0+)?", text) else text


def _cell_score(value: Any, file: Path, row: int, column: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return None if math.isnan(float(value)) else float(value)
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return float(text.lower() == "true")
    if text.lower() == "nan":
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{file}: row {row}: column '{column}' holds {text[:40]!r}, not a score") from None


def _cell_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _table_rows(file: Path) -> list[dict[str, Any]]:
    if file.suffix == ".xlsx":
        if importlib.util.find_spec("openpyxl") is None:
            raise DataError(f"{file}: reading .xlsx needs openpyxl (pip install openpyxl), or have VLMEvalKit write "
                            "tsv (PRED_FORMAT=tsv)")
        import openpyxl  # optional dependency: only .xlsx files need it

        sheet = openpyxl.load_workbook(file, read_only=True, data_only=True).active
        values = [list(r) for r in sheet.iter_rows(values_only=True)]
        if not values:
            return []
        header = [str(h) for h in values[0]]
        return [dict(zip(header, r)) for r in values[1:] if any(v is not None for v in r)]
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read as UTF-8 text: {exc}") from None
    csv.field_size_limit(1 << 30)  # VLMEvalKit tsv files carry base64 images in a column
    # a file-like object with newline="": newlines inside quoted fields stay in their field
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if file.suffix == ".tsv" else ","))


# ------------------------------------------------------------------------------------------------------- comparing


@dataclass
class TaskForgetting:
    """One task and metric, base vs fine-tuned on the documents both logged."""

    task: str
    metric: str
    scale: Literal["binary", "continuous"]
    n: int
    base: Estimate
    finetuned: Estimate
    forgetting: PairedTest  # base - fine-tuned: positive means forgotten
    wilcoxon_p: float | None
    base_only: list[str]
    finetuned_only: list[str]
    base_unscored: int
    finetuned_unscored: int
    base_file: str
    finetuned_file: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "metric": self.metric, "scale": self.scale, "n": self.n,
            "base": self.base.to_dict(), "finetuned": self.finetuned.to_dict(),
            "forgetting": self.forgetting.to_dict(), "wilcoxon_p": self.wilcoxon_p,
            "unmatched": {"base_only": len(self.base_only), "finetuned_only": len(self.finetuned_only),
                          "base_only_ids": self.base_only[:MAX_LISTED_IDS],
                          "finetuned_only_ids": self.finetuned_only[:MAX_LISTED_IDS]},
            "unscored": {"base": self.base_unscored, "finetuned": self.finetuned_unscored},
            "files": {"base": self.base_file, "finetuned": self.finetuned_file},
        }


@dataclass
class HarnessComparison:
    tasks: list[TaskForgetting]
    base_only_tasks: list[str]
    finetuned_only_tasks: list[str]
    skipped: list[SkippedMetric]
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": [t.to_dict() for t in self.tasks],
            "unmatched_tasks": {"base_only": self.base_only_tasks, "finetuned_only": self.finetuned_only_tasks},
            "skipped_metrics": [{"task": s.task, "metric": s.metric, "file": s.file, "reason": s.reason}
                                for s in self.skipped],
            "alpha": self.alpha,
        }


def compare_logs(base: HarnessLogs, finetuned: HarnessLogs, *, alpha: float = 0.05, n_resamples: int = 2000,
                 seed: int = 0) -> HarnessComparison:
    """Per task and metric logged by both, the paired forgetting on the documents both scored."""
    b, f = base.by_key(), _aligned(base, finetuned)
    results = [_task_forgetting(b[k], f[k], alpha, n_resamples, seed) for k in b if k in f]
    skipped = base.skipped + [s for s in finetuned.skipped if (s.task, s.metric) not in
                              {(x.task, x.metric) for x in base.skipped}]
    return HarnessComparison(results, [f"{t}/{m}" for t, m in b if (t, m) not in f],
                             [f"{t}/{m}" for t, m in f if (t, m) not in b], skipped, alpha)


def _aligned(base: HarnessLogs, finetuned: HarnessLogs) -> dict[tuple[str, str], TaskLog]:
    """The fine-tuned logs by (task, metric); a pair of single-task logs of one metric whose task names differ (two
    files given directly, named after two models) counts as one task, named by the base."""
    b, f = base.by_key(), finetuned.by_key()
    if len(b) == 1 and len(f) == 1 and b.keys() != f.keys():
        (bk, _), (fk, ft) = next(iter(b.items())), next(iter(f.items()))
        if bk[1] == fk[1]:
            return {bk: ft}
    return f


def _task_forgetting(base: TaskLog, tuned: TaskLog, alpha: float, n_resamples: int, seed: int) -> TaskForgetting:
    keys = [k for k in base.samples if k in tuned.samples]
    if not keys:
        raise DataError(f"task '{base.task}' metric '{base.metric}': no document id is scored in both logs "
                        f"({base.file}: {len(base.samples)}, {tuned.file}: {len(tuned.samples)}); are they the "
                        "same task and split?")
    x = np.array([base.samples[k].score for k in keys])
    y = np.array([tuned.samples[k].score for k in keys])
    binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all())
    confidence = 1.0 - alpha
    if binary:
        before, after = accuracy_estimate(x.astype(bool), confidence), accuracy_estimate(y.astype(bool), confidence)
    else:
        before = bootstrap_interval(lambda a: a.mean(-1), x, n_resamples=n_resamples, confidence=confidence, seed=seed)
        after = bootstrap_interval(lambda a: a.mean(-1), y, n_resamples=n_resamples, confidence=confidence, seed=seed)
    test = forgetting_delta(x.astype(bool) if binary else x, y.astype(bool) if binary else y, alpha=alpha,
                            n_resamples=n_resamples, seed=seed)
    wilcoxon = None
    if not binary and np.any(x != y):
        wilcoxon = float(scipy_stats.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return TaskForgetting(
        task=base.task, metric=base.metric, scale="binary" if binary else "continuous", n=len(keys), base=before,
        finetuned=after, forgetting=test, wilcoxon_p=wilcoxon,
        base_only=[k for k in base.samples if k not in tuned.samples],
        finetuned_only=[k for k in tuned.samples if k not in base.samples],
        base_unscored=len(base.unscored), finetuned_unscored=len(tuned.unscored), base_file=base.file,
        finetuned_file=tuned.file)


def paired_records(base: HarnessLogs, finetuned: HarnessLogs) -> list[dict[str, Any]]:
    """One record per matched document of every task both logged: both scores and responses (samples.jsonl)."""
    f = _aligned(base, finetuned)
    out = []
    for (task, metric), bt in base.by_key().items():
        ft = f.get((task, metric))
        for key, sample in bt.samples.items():
            other = ft.samples.get(key) if ft is not None else None
            if other is not None:
                out.append({"task": task, "metric": metric, "id": key, "target": sample.target,
                            "base": sample.score, "finetuned": other.score, "base_response": sample.response,
                            "finetuned_response": other.response})
    return out


def write_harness_comparison(out: str | Path, base_path: str | Path, finetuned_path: str | Path, *,
                             metric: str | None = None, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0,
                             overwrite: bool = False) -> tuple[Path, HarnessComparison]:
    """Read both harness outputs, compare them and write the run folder: run.json (kind ``harness-compare``),
    samples.jsonl (the matched pairs) and metrics.json (every task's forgetting). Returns (folder, comparison)."""
    base = read_harness_logs(base_path, metric)
    tuned = read_harness_logs(finetuned_path, metric)
    comparison = compare_logs(base, tuned, alpha=alpha, n_resamples=n_resamples, seed=seed)
    if not comparison.tasks:
        raise DataError(f"no task is logged in both {base_path} ({', '.join(sorted({t.task for t in base.tasks}))}) "
                        f"and {finetuned_path} ({', '.join(sorted({t.task for t in tuned.tasks}))}); give the "
                        "two runs of the same tasks (or two files of one task)")
    identity = {"base": _fingerprint(base), "finetuned": _fingerprint(tuned), "metric": metric, "alpha": alpha,
                "resamples": n_resamples, "seed": seed}
    run = prepare_run(out, HARNESS_COMPARE_KIND, identity, overwrite=overwrite)
    atomic_write_text(run.samples_path, "".join(dumps_strict(r, ensure_ascii=False) + "\n"
                                                for r in paired_records(base, tuned)))
    run.write_metrics({"run_info": run_info(),
                       "config": {"base": str(base_path), "finetuned": str(finetuned_path), "metric": metric,
                                  "alpha": alpha, "resamples": n_resamples, "seed": seed},
                       "harnesses": sorted({t.harness for t in base.tasks + tuned.tasks}),
                       **comparison.to_dict()})
    run.mark_done()
    return run.path, comparison


def _fingerprint(logs: HarnessLogs) -> dict[str, Any]:
    """What decides the numbers: each task log's file and its scores (a digest), not its location on disk."""
    out = {}
    for t in logs.tasks:
        digest = hashlib.sha256(json.dumps(sorted((k, s.score) for k, s in t.samples.items())).encode()).hexdigest()
        out[f"{t.task}/{t.metric}"] = digest
    return out
