"""The cascade judge: cheap judges first, the LLM only for the answers they are not confident about.

Default stages: exact -> embedding -> llm. Each stage judges only what the stages before it left undecided
(``Verdict.confident`` False); the last stage decides everything that reaches it. The verdict names the stage that
decided (``Verdict.judge``) and carries every stage's verdict for that answer in ``raw``. An LLM that cannot judge
an answer leaves it unjudged: an earlier stage's unconfident guess is never used in its place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from ...errors import JudgeError
from .base import JUDGES, Judge, JudgeItem, Verdict, build_judge

DEFAULT_STAGES = ("exact", "embedding", "llm")


class CascadeJudge:
    """``stages``: judge instances, or names built with their defaults (``build_judge(name)``). Closing the cascade
    closes its stages."""

    name = "cascade"
    description = "exact, then embedding, then the LLM only where unsure"
    version = "1"

    def __init__(self, stages: Sequence[Judge | str] = DEFAULT_STAGES):
        if not stages:
            raise JudgeError("a cascade needs at least one stage (e.g. exact, embedding, llm)")
        self.stages: list[Judge] = [build_judge(s) if isinstance(s, str) else s for s in stages]
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise JudgeError(f"cascade stages must be different judges, got {names}")
        self._items = 0
        self._decided_by: Counter[str] = Counter()
        self._sent_to: Counter[str] = Counter()

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": self.version, "stages": [s.identity() for s in self.stages]}

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        stage_verdicts: list[dict[str, dict[str, Any]]] = [{} for _ in items]
        final: list[Verdict | None] = [None] * len(items)
        pending = list(range(len(items)))
        for depth, stage in enumerate(self.stages):
            if not pending:
                break
            last = depth == len(self.stages) - 1
            self._sent_to[stage.name] += len(pending)
            verdicts = stage.judge([items[i] for i in pending])
            undecided = []
            for i, v in zip(pending, verdicts):
                stage_verdicts[i][stage.name] = v.to_dict()
                if v.confident or last:
                    final[i] = self._decided(items[i], v, stage.name, stage_verdicts[i])
                else:
                    undecided.append(i)
            pending = undecided
        self._items += len(items)
        decided = [v for v in final if v is not None]  # all of them: the last stage decides whatever reaches it
        self._decided_by.update(v.judge for v in decided)
        return decided

    @staticmethod
    def _decided(item: JudgeItem, v: Verdict, stage: str, stages: dict[str, dict[str, Any]]) -> Verdict:
        prediction = v.prediction
        if v.correct is False and prediction is None:
            # the LLM says "wrong" without naming a class; an earlier stage may have seen which class was named
            named = [s["prediction"] for s in stages.values() if s["prediction"] not in (None, item.reference)]
            prediction = named[0] if named else None
        return Verdict(prediction=prediction, correct=v.correct, confident=v.confident, judge=stage,
                       raw={"decided_by": stage, "stages": stages}, error=v.error)

    def stats(self) -> dict[str, Any]:
        """Who decided how many answers; with an llm stage, the LLM calls made (``llm_calls``, after its cache) and
        ``llm_calls_saved``: the answers the cheaper stages settled, which an LLM-only run (one call per answer,
        ``llm_only_calls``) would have sent."""
        out: dict[str, Any] = {"items": self._items, "decided_by": dict(self._decided_by),
                               "sent_to": dict(self._sent_to)}
        llm = next((s for s in self.stages if s.name == "llm"), None)
        if llm is not None:
            llm_stats = llm.stats()
            out["llm"] = llm_stats
            out["llm_calls"] = llm_stats["calls"]
            out["llm_only_calls"] = self._items
            out["llm_calls_saved"] = self._items - self._sent_to["llm"]
        return out

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


JUDGES.register(CascadeJudge)
