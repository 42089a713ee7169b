"""The per-sample record of ``samples.jsonl``: one typed shape, written by the evaluator and read back on resume,
by rejudging and by every report.

Three kinds share the file: a judged answer (classification, VQA, text), a caption (scored as a set against its
references, no judge) and a sample that could not be read (``skipped``, with the error). A study's own fields (the
epoch, the fine-tuning method, the continual step) come first, as ``tag``: they select the records a resume reuses.
On disk a record is a JSON object whose key order is fixed by :meth:`SampleRecord.to_dict`; fields that do not apply
to a record's kind are left out, not written as null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# the fields of a judged answer, in the order they are written
_JUDGED = ("split", "task", "question", "answer", "reference", "label", "prediction", "correct", "judge", "confident",
           "judge_identity", "judgements", "mode", "leaks")
_CAPTION = ("split", "task", "question", "answer", "reference", "references", "mode")
_OPTIONAL = ("qtype", "rank_of_reference", "top_k", "rank", "score", "choice")
_KNOWN = {"id", "dataset", "skipped", "error", *_JUDGED, *_CAPTION, *_OPTIONAL}


@dataclass
class SampleRecord:
    """One sample's line. ``dataset`` is the dataset reference as written in the config (its identity in run.json),
    never a folder's last name. ``correct`` None means unjudged (a judge failure), never wrong."""

    id: str
    dataset: str
    tag: dict[str, Any] = field(default_factory=dict)  # the study's fields: epoch, method, step, model, ...
    split: str | None = None
    task: str | None = None
    question: str | None = None
    answer: str | None = None
    reference: str | None = None
    label: int | None = None
    prediction: str | None = None
    correct: bool | None = None
    judge: str | None = None
    confident: bool | None = None
    judge_identity: dict[str, Any] | None = None
    judgements: dict[str, Any] | None = None  # every judge's verdict by judge name
    mode: str | None = None  # generate | rank
    leaks: dict[str, bool] | None = None  # per leak-label dataset: the answer names one of its classes
    references: list[str] | None = None  # caption records: every reference caption
    qtype: str | None = None  # VQA question type
    rank_of_reference: int | None = None  # rank mode
    top_k: list[Any] | None = None  # rank mode
    rank: dict[str, Any] | None = None  # generate mode with also_rank: the ranking's verdict, kept apart
    score: float | None = None  # benchmark sets (dataset metric): the per-sample score, e.g. VQA accuracy
    choice: dict[str, Any] | None = None  # multiple choice: options, letter read, mischoice, rotations
    skipped: bool = False
    error: str | None = None

    @property
    def kind(self) -> str:
        if self.skipped:
            return "skipped"
        return "caption" if self.task == "caption" else "judged"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.tag, "id": self.id, "dataset": self.dataset}
        if self.skipped:
            out.update(skipped=True, error=self.error)
            return out
        for name in (_CAPTION if self.task == "caption" else _JUDGED):
            out[name] = getattr(self, name)
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None and (name != "qtype" or value):
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tag_keys: tuple[str, ...] | None = None) -> "SampleRecord":
        """A record read back; keys that are not record fields are its tag."""
        fields = {k: v for k, v in data.items() if k in _KNOWN}
        tag = {k: v for k, v in data.items() if k not in _KNOWN}
        return cls(tag=tag, **fields)


def judged(records: Sequence[Mapping[str, Any]]) -> list:
    """Records with a verdict: skipped samples and judge failures (``correct`` None) are left out, as in the metrics."""
    return [r for r in records if not r.get("skipped") and r.get("correct") is not None]
