"""The LLM judge: the prompt to a backend (an endpoint or a local model), its reply read as yes / no, verdicts cached
on disk by the judge's whole identity, counters for metrics.json."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from ....errors import JudgeError
from ..base import JudgeItem, Verdict
from ..cache import JudgeCache, default_cache_dir, judge_cache_key
from .endpoint import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, EndpointOptions, OpenAIChatBackend
from .local import ENV_LOCAL_MODEL, LocalCausalLMBackend, LocalOptions, offline_default_judge
from .prompt import PROMPT_VERSION, Completion, decide_completion, judge_prompt, label_text

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the judge asks of a backend (:class:`OpenAIChatBackend`, :class:`LocalCausalLMBackend`)."""

    max_tokens: int

    def describe(self) -> dict[str, Any]: ...

    def redact(self, text: str) -> str: ...

    def complete_many(self, prompts: Sequence[str]) -> Iterator[tuple[int, Completion]]: ...


@dataclass(frozen=True)
class LLMJudgeOptions:
    """Every ``judge_options.llm.<name>`` (``--judge-option llm.<name>=VALUE``), given flat as users write them and
    sorted here: the endpoint's (:class:`EndpointOptions`), the local model's (:class:`LocalOptions`; ``max_tokens``
    and ``decide`` go to both, each backend with its own default) and the judge's own: the verdict cache
    (``cache_dir``, ``use_cache``) and the prices that turn token counts into a cost."""

    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    local: LocalOptions = field(default_factory=LocalOptions)
    cache_dir: str | Path | None = None
    use_cache: bool = True
    cost_per_1k_prompt_tokens: float | None = None
    cost_per_1k_completion_tokens: float | None = None

    @classmethod
    def from_flat(cls, options: Mapping[str, Any]) -> LLMJudgeOptions:
        own = {f.name for f in fields(cls)} - {"endpoint", "local"}
        endpoint = {f.name for f in fields(EndpointOptions)}
        local = {f.name for f in fields(LocalOptions)}
        for name in options:
            if name not in own | endpoint | local:
                raise TypeError(f"LLMJudge.__init__() got an unexpected keyword argument '{name}'")

        def pick(names: set[str]) -> dict[str, Any]:
            return {k: v for k, v in options.items() if k in names}

        return cls(endpoint=EndpointOptions(**pick(endpoint)), local=LocalOptions(**pick(local)), **pick(own))


@dataclass
class LLMJudgeStats:
    """Counters since the judge was made. ``calls``: judgements to ask the model (once per distinct uncached
    judgement); ``retries``: extra attempts; ``failures``: calls that gave no reply; ``unparseable``: replies that
    were neither yes nor no (or cut at max_tokens, or a malformed body); ``not_sent``: calls never made because the
    judge had stopped after ``max_consecutive_failures`` failed requests in a row. All three are unjudged."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    unparseable: int = 0
    not_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_per_1k_prompt_tokens: float | None = None
    cost_per_1k_completion_tokens: float | None = None

    @property
    def unjudged(self) -> int:
        return self.failures + self.unparseable + self.not_sent

    @property
    def cost(self) -> float | None:
        if self.cost_per_1k_prompt_tokens is None and self.cost_per_1k_completion_tokens is None:
            return None
        return (self.prompt_tokens * (self.cost_per_1k_prompt_tokens or 0.0)
                + self.completion_tokens * (self.cost_per_1k_completion_tokens or 0.0)) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(unjudged=self.unjudged, tokens=self.prompt_tokens + self.completion_tokens, cost=self.cost)
        return out


def make_backend(options: LLMJudgeOptions) -> Backend:
    """The local model when one is named (option or environment), else the endpoint, its model name checked where
    ``check_model``; neither configured: a JudgeError saying how to configure one."""
    local_model = options.local.judge_model or os.environ.get(ENV_LOCAL_MODEL) or None
    if local_model:
        return LocalCausalLMBackend(local_model, options.local)
    endpoint = options.endpoint.from_environment()
    missing = endpoint.unset()
    if missing:
        raise JudgeError(
            f"the llm judge needs an OpenAI-compatible endpoint: set {' and '.join(missing)} (e.g. "
            f"{ENV_BASE_URL}=https://api.openai.com/v1 {ENV_MODEL}=gpt-4o-mini, and {ENV_API_KEY}), or run "
            f"a local model with {ENV_LOCAL_MODEL}=PATH (LLMJudge(judge_model=PATH), --judge-model PATH)"
            + (f"; offline, `--judge-model {offline_default_judge()}` runs SmolLM2-135M-Instruct from its "
               "package (a weak judge: see the README's agreement figures)" if offline_default_judge() else "")
            + "."
        )
    backend = OpenAIChatBackend(endpoint)
    if endpoint.check_model:
        backend.check_model_listed()
    return backend


class LLMJudge:
    """Ask a language model whether each answer is correct (EMT). See the package docstring for the two backends.

    ``prediction`` is the reference when the model says yes and None when it says no (the judge learns right or
    wrong, not which other class was named); a verdict is always confident - the LLM is the last word.

    ``options``: the flat ``judge_options.llm`` names, each a field of :class:`LLMJudgeOptions`,
    :class:`EndpointOptions` or :class:`LocalOptions`; an unknown name is a TypeError."""

    name = "llm"
    description = "an LLM asked yes/no (OpenAI-compatible endpoint or a local model), cached on disk"
    version = "1"

    def __init__(self, **options: Any):
        opts = LLMJudgeOptions.from_flat(options)  # not kept: it holds the key
        self._backend: Backend = make_backend(opts)
        self._cache_identity = self._verdict_identity()
        self._cache = JudgeCache(opts.cache_dir or default_cache_dir()) if opts.use_cache else None
        self._stats = LLMJudgeStats(cost_per_1k_prompt_tokens=opts.cost_per_1k_prompt_tokens,
                                    cost_per_1k_completion_tokens=opts.cost_per_1k_completion_tokens)
        self._lock = threading.Lock()

    def _verdict_identity(self) -> dict[str, Any]:
        """Everything that can change a verdict: identity() less what the decide mode ignores (a first-token
        decision reads no max_tokens). Part of every cache key."""
        out = self.identity()
        if out.get("decide") == "logits":
            out.pop("max_tokens", None)
        return out

    def identity(self) -> dict[str, Any]:
        """The judge as recorded with every verdict: for an endpoint its public base URL, the configured model name
        (never the one a server echoes back), prompt version and decoding; never a key or a header value."""
        return {"judge": self.name, "version": self.version, "prompt_version": PROMPT_VERSION,
                **self._backend.describe()}

    def stats(self) -> dict[str, Any]:
        """Counters for metrics.json: calls, cache_hits, retries, failures, unparseable, not_sent, unjudged, tokens,
        cost."""
        with self._lock:
            return self._stats.to_dict()

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}  # cache key -> items asking exactly this (asked once)
        prompts: dict[str, str] = {}
        for i, it in enumerate(items):
            label = label_text(it)
            key = judge_cache_key(self._cache_identity, it.question, it.answer, label)
            cached = self._cache.get(key) if self._cache is not None and key not in todo else None
            if cached is not None:
                self._stats.cache_hits += 1
                verdicts[i] = self._verdict(it, cached["correct"], cached["reply"], cached=True)
                continue
            todo.setdefault(key, []).append(i)
            prompts.setdefault(key, judge_prompt(it.question, label, it.answer))
        keys = list(todo)
        self._stats.calls += len(keys)
        for k, completion in self._backend.complete_many([prompts[key] for key in keys]):
            key = keys[k]
            self._count(completion)
            if completion.text is not None:  # a server echoing the request must not put the key in a record
                completion.text = self._backend.redact(completion.text)
            correct, error = decide_completion(completion, self._backend.max_tokens)
            if correct is None:
                with self._lock:
                    if completion.not_sent:
                        self._stats.not_sent += 1
                    elif completion.transport_failure:
                        self._stats.failures += 1
                    else:
                        self._stats.unparseable += 1
            elif self._cache is not None:
                first = items[todo[key][0]]
                self._cache.put(key, {"correct": correct, "reply": completion.text, "judge": self._cache_identity,
                                      "question": first.question, "answer": first.answer, "label": label_text(first),
                                      "logprobs": completion.logprobs, "prompt_tokens": completion.prompt_tokens,
                                      "completion_tokens": completion.completion_tokens})
            for i in todo[key]:
                verdicts[i] = self._verdict(items[i], correct, completion.text, error=error,
                                            logprobs=completion.logprobs)
        unjudged = sum(v is not None and v.correct is None for v in verdicts)
        if unjudged:
            log.warning("llm judge: %d of %d answers unjudged (see each verdict's error)", unjudged, len(items))
        return [v for v in verdicts if v is not None]

    def _count(self, completion: Completion) -> None:
        with self._lock:
            self._stats.retries += completion.retries
            self._stats.prompt_tokens += completion.prompt_tokens
            self._stats.completion_tokens += completion.completion_tokens

    def _verdict(self, item: JudgeItem, correct: bool | None, reply: str | None, *, cached: bool = False,
                 error: str | None = None, logprobs: dict[str, float] | None = None) -> Verdict:
        prediction = item.reference if correct else None
        raw: dict[str, Any] = {"reply": reply, "cached": cached}
        if logprobs:
            raw["logprobs"] = logprobs
        return Verdict(prediction=prediction, correct=correct, confident=True, judge=self.name, raw=raw,
                       error=self._backend.redact(error) if error else None)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
