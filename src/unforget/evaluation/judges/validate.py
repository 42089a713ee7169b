"""Validate judges against human verdicts: how often does each judge agree with a person reading the answer?

A gold file is JSONL, one hand-labelled answer per line (blank lines and lines starting with ``#`` are ignored)::

    {"id": "d01", "dataset": "digits", "answer": "The number in the image is 7.", "reference": "7", "correct": true}
    {"id": "d02", "dataset": "digits", "answer": "It could be a 3 or an 8.", "label": 8, "correct": false,
     "note": "hedged between two classes: a person does not accept it"}

Fields:

- ``answer`` (string, required): the model's free-form answer, as it generated it.
- ``correct`` (true/false, required): the human verdict - does the answer give the reference class?
- ``reference`` (string) or ``label`` (class index into the dataset's class names): the true class; one is required.
- ``dataset`` (string): the dataset whose class names and synonyms the judges see; may be left out when
  ``--dataset`` is given.
- ``question`` (string, optional): the prompt; default the dataset's first (EMT-style) template.
- ``id`` (string, optional): a name for the line in disagreement lists; default ``<file stem>:<line>``.
- ``note`` (string, optional): why the verdict is what it is; carried to the disagreement list.

Each judge's verdicts are compared with the human ones: accuracy (agreement) with a Wilson interval, Cohen's kappa
with a paired bootstrap interval, false accepts (judge says right, person says wrong) and false rejects. Answers a
judge could not judge (``correct`` None: an endpoint down) are counted apart, never as disagreement.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...config import CONFIG_ROOTS
from ...data import Sample, load_dataset
from ...errors import DataError, JudgeError
from ...stats import Estimate, cohen_kappa_estimate, wilson_interval
from .base import Judge, JudgeItem, Verdict, build_judges

log = logging.getLogger(__name__)

GOLD_FOLDER = "judges"  # shipped gold files: configs/judges/gold-<dataset>.jsonl
_KNOWN_FIELDS = {"id", "dataset", "answer", "correct", "reference", "label", "question", "note"}
MAX_DISAGREEMENTS = 50  # per judge, in the metrics file


@dataclass(frozen=True)
class GoldAnswer:
    """One hand-labelled answer. ``where`` is ``file:line`` for messages."""

    id: str
    dataset: str
    question: str
    answer: str
    reference: str
    correct: bool
    where: str
    note: str = ""


@dataclass
class JudgeValidation:
    """One judge against the gold verdicts."""

    judge: str
    identity: dict[str, Any]
    n: int  # gold answers shown to the judge
    judged: int  # answers the judge gave a verdict on
    unjudged: int
    accuracy: Estimate | None  # agreement with the person, over judged answers
    kappa: Estimate | None  # Cohen's kappa with a bootstrap interval; value NaN when undefined
    false_accepts: int  # judge: correct, person: wrong
    false_rejects: int  # judge: wrong, person: correct
    by_dataset: dict[str, Estimate] = field(default_factory=dict)
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge, "identity": self.identity, "n": self.n, "judged": self.judged,
            "unjudged": self.unjudged, "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "kappa": self.kappa.to_dict() if self.kappa else None, "false_accepts": self.false_accepts,
            "false_rejects": self.false_rejects, "by_dataset": {d: e.to_dict() for d, e in self.by_dataset.items()},
            "disagreements": self.disagreements,
        }


@dataclass
class GoldValidation:
    """Every judge on one gold file; judges that could not be built are listed with the reason."""

    gold: str
    n: int
    datasets: dict[str, int]  # dataset -> gold answers
    human_correct: int
    judges: list[JudgeValidation]
    unavailable: dict[str, str] = field(default_factory=dict)
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {"gold": self.gold, "n": self.n, "datasets": self.datasets, "human_correct": self.human_correct,
                "confidence": self.confidence, "judges": {j.judge: j.to_dict() for j in self.judges},
                "unavailable": self.unavailable}


# ------------------------------------------------------------------------------------------------------ reading


def find_gold_file(name: str | Path) -> Path:
    """A gold file by path, or a shipped one by name (``digits``, ``gold-digits``: configs/judges/gold-digits.jsonl)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = str(name)
    stems = [stem, f"gold-{stem}"]
    for root in CONFIG_ROOTS:
        for s in stems:
            for candidate in (root / GOLD_FOLDER / s, root / GOLD_FOLDER / f"{s}.jsonl"):
                if candidate.is_file():
                    return candidate
    shipped = sorted({p.stem for root in CONFIG_ROOTS if (root / GOLD_FOLDER).is_dir()
                      for p in (root / GOLD_FOLDER).glob("*.jsonl")})
    raise DataError(f"no gold file '{name}': give the path of a JSONL file of hand-labelled answers "
                    f"(format: unforget.evaluation.judges.validate); shipped: {', '.join(shipped) or '(none)'}")


def read_gold(path: str | Path, *, dataset: str | None = None) -> list[GoldAnswer]:
    """Parse a gold file. ``dataset``: the dataset of lines that name none, and a filter (lines of other datasets are
    left out). Any malformed line is an error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read gold file {path}: {exc}") from exc
    datasets: dict[str, Any] = {}
    out: list[GoldAnswer] = []
    skipped = 0
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}, line {number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        name = rec.get("dataset", dataset)
        if dataset is not None and name != dataset:
            skipped += 1
            continue
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: no 'dataset' field; add one (e.g. \"dataset\": \"digits\") or pass --dataset")
        if name not in datasets:
            try:
                datasets[name] = load_dataset(name)
            except DataError as exc:
                raise DataError(f"{where}: dataset '{name}' cannot be loaded: {exc}") from exc
            except KeyError as exc:  # RegistryError: unknown name, with did-you-mean
                raise DataError(f"{where}: {exc}") from exc
        out.append(_gold_answer(rec, datasets[name], where, f"{path.stem}:{number}"))
    if skipped:
        log.info("%s: %d lines of datasets other than '%s' left out", path, skipped, dataset)
    if not out:
        raise DataError(f"{path}: no gold answers" + (f" of dataset '{dataset}'" if dataset else "")
                        + "; each line needs answer, correct, reference (or label) and dataset")
    ids = [g.id for g in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"{path}: ids used more than once: {', '.join(dupes[:5])}; give every line its own id")
    return out


def _gold_answer(rec: dict[str, Any], ds: Any, where: str, default_id: str) -> GoldAnswer:
    unknown = sorted(set(rec) - _KNOWN_FIELDS)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN_FIELDS)}")
    answer = rec.get("answer")
    if not isinstance(answer, str):
        raise DataError(f"{where}: 'answer' must be the model's answer as a string, got {answer!r}")
    correct = rec.get("correct")
    if not isinstance(correct, bool):
        raise DataError(f"{where}: 'correct' must be true or false (the human verdict), got {correct!r}")
    reference = rec.get("reference")
    label = rec.get("label")
    if reference is None and label is None:
        raise DataError(f"{where}: give the true class as 'reference' (a class name) or 'label' (a class index)")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(ds.class_names):
            raise DataError(f"{where}: 'label' {label!r} is not a class index of dataset '{ds.name}' "
                            f"(0..{len(ds.class_names) - 1})")
        by_label = ds.class_names[label]
        if reference is not None and str(reference) != by_label:
            raise DataError(f"{where}: 'reference' {reference!r} and 'label' {label} (= {by_label!r}) disagree; "
                            "give one of them")
        reference = by_label
    reference = str(reference)
    if ds.class_names and reference not in ds.class_names:
        raise DataError(f"{where}: reference {reference!r} is not a class of dataset '{ds.name}' "
                        f"({', '.join(ds.class_names)})")
    question = rec.get("question")
    if question is None:
        question = ds.question_for(Sample(id="gold"), 0)
    elif not isinstance(question, str):
        raise DataError(f"{where}: 'question' must be a string, got {question!r}")
    gid = rec.get("id", default_id)
    return GoldAnswer(id=str(gid), dataset=ds.name, question=question, answer=answer, reference=reference,
                      correct=correct, where=where, note=str(rec.get("note") or ""))


def gold_items(gold: Sequence[GoldAnswer]) -> list[JudgeItem]:
    """What every judge sees for each gold answer: the same JudgeItem the evaluator builds."""
    datasets = {name: load_dataset(name) for name in dict.fromkeys(g.dataset for g in gold)}
    return [JudgeItem(question=g.question, answer=g.answer, reference=g.reference,
                      class_names=datasets[g.dataset].class_names, synonyms=datasets[g.dataset].synonyms)
            for g in gold]


# ------------------------------------------------------------------------------------------------------ scoring


def score_judge(judge: str, identity: dict[str, Any], gold: Sequence[GoldAnswer], verdicts: Sequence[Verdict], *,
                confidence: float = 0.95, n_resamples: int = 2000) -> JudgeValidation:
    """Agreement of ``verdicts`` with the human verdicts of ``gold`` (same order)."""
    if len(verdicts) != len(gold):
        raise JudgeError(f"judge '{judge}' returned {len(verdicts)} verdicts for {len(gold)} answers")
    pairs = [(g, v) for g, v in zip(gold, verdicts) if v.correct is not None]
    human = [g.correct for g, _ in pairs]
    said = [bool(v.correct) for _, v in pairs]
    agree = sum(h == s for h, s in zip(human, said))
    accuracy = wilson_interval(agree, len(pairs), confidence) if pairs else None
    kappa = cohen_kappa_estimate(human, said, n_resamples=n_resamples, confidence=confidence) if pairs else None
    by_dataset: dict[str, Estimate] = {}
    for name in dict.fromkeys(g.dataset for g, _ in pairs):
        rows = [(g.correct, bool(v.correct)) for g, v in pairs if g.dataset == name]
        by_dataset[name] = wilson_interval(sum(h == s for h, s in rows), len(rows), confidence)
    disagreements = [{"id": g.id, "dataset": g.dataset, "answer": g.answer, "reference": g.reference,
                      "human": g.correct, "judge": bool(v.correct), "prediction": v.prediction, "note": g.note}
                     for g, v in pairs if g.correct != bool(v.correct)]
    return JudgeValidation(
        judge=judge, identity=identity, n=len(gold), judged=len(pairs), unjudged=len(gold) - len(pairs),
        accuracy=accuracy, kappa=kappa,
        false_accepts=sum(1 for h, s in zip(human, said) if s and not h),
        false_rejects=sum(1 for h, s in zip(human, said) if h and not s),
        by_dataset=by_dataset, disagreements=disagreements[:MAX_DISAGREEMENTS],
    )


def build_available_judges(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None
                           ) -> tuple[list[Judge], dict[str, str]]:
    """:func:`build_judges`, except that a judge that cannot be built here (no endpoint, model package missing) is
    returned in the second value with the reason instead of stopping the others; an unknown name still raises."""
    built: list[Judge] = []
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            built += build_judges([name], options)
        except JudgeError as exc:
            unavailable[name] = str(exc)
            log.warning("judge '%s' left out: %s", name, exc)
    return built, unavailable


def validate_judges(gold: Sequence[GoldAnswer], judges: Sequence[Judge], *, gold_name: str = "",
                    unavailable: dict[str, str] | None = None, confidence: float = 0.95,
                    n_resamples: int = 2000) -> tuple[GoldValidation, dict[str, list[Verdict]]]:
    """Run every judge on the gold answers; (the validation, each judge's verdicts in gold order)."""
    items = gold_items(gold)
    results: list[JudgeValidation] = []
    verdicts: dict[str, list[Verdict]] = {}
    for judge in judges:
        verdicts[judge.name] = judge.judge(items)
        results.append(score_judge(judge.name, judge.identity(), gold, verdicts[judge.name], confidence=confidence,
                                   n_resamples=n_resamples))
    counts: dict[str, int] = {}
    for g in gold:
        counts[g.dataset] = counts.get(g.dataset, 0) + 1
    validation = GoldValidation(gold=gold_name, n=len(gold), datasets=counts,
                                human_correct=sum(g.correct for g in gold), judges=results,
                                unavailable=dict(unavailable or {}), confidence=confidence)
    return validation, verdicts


def gold_records(gold: Sequence[GoldAnswer], verdicts: dict[str, list[Verdict]]) -> list[dict[str, Any]]:
    """One record per gold answer with every judge's verdict beside the human one (the run's samples.jsonl)."""
    return [{"id": g.id, "dataset": g.dataset, "question": g.question, "answer": g.answer, "reference": g.reference,
             "human": g.correct, "note": g.note, "where": g.where,
             "judgements": {name: vs[i].to_dict() for name, vs in verdicts.items()}}
            for i, g in enumerate(gold)]
