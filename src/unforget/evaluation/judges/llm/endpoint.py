"""The LLM judge's endpoint backend: any OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, vLLM, llama.cpp
server, ...), one request per prompt in a thread pool, with retries, backoff and a stop after repeated failures; the
URL helpers that keep secrets out of what is shown and recorded."""

from __future__ import annotations

import email.utils
import errno
import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

from ....errors import JudgeError
from ....registry import did_you_mean
from ....runs.secrets import REDACTED, is_secret_name
from .prompt import Completion

log = logging.getLogger(__name__)

ENV_BASE_URL = "UNFORGET_JUDGE_BASE_URL"
ENV_MODEL = "UNFORGET_JUDGE_MODEL"
ENV_API_KEY = "UNFORGET_JUDGE_API_KEY"

ENDPOINT_MAX_TOKENS = 512  # room for a reasoning model's thinking before its yes / no (8 cut it off)
TOP_LOGPROBS = 20  # decide="logprobs": the most the OpenAI API returns
ENDPOINT_DECIDE = ("generate", "logprobs")

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_FATAL_STATUS = {401: "the API key was refused", 403: "the API key may not use this model",
                 404: "the model or the endpoint does not exist"}
_NO_CONNECTION_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


@dataclass(frozen=True)
class EndpointOptions:
    """The endpoint's ``judge_options.llm.<name>`` settings. ``base_url`` and ``model`` default to
    ``UNFORGET_JUDGE_BASE_URL`` / ``UNFORGET_JUDGE_MODEL``, ``api_key`` to the variable ``api_key_env`` names;
    ``headers`` adds request headers (Azure's ``api-key``), secret like the key. ``decide`` is "generate" (default:
    parse the reply) or "logprobs" (the likelier of yes / no as the first token); ``max_tokens`` defaults to
    :data:`ENDPOINT_MAX_TOKENS` (1 with logprobs). After ``max_consecutive_failures`` failed requests in a row, each
    after ``max_retries`` - or ``connect_retries`` when no connection can be made - the judge stops sending (0:
    never stops). ``check_model``: refuse a model name that ``GET {base}/models`` does not list."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str = ENV_API_KEY
    headers: Mapping[str, Any] | None = field(default=None, repr=False)
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    connect_retries: int = 2
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    max_consecutive_failures: int = 3
    max_tokens: int | None = None
    decide: str | None = None
    check_model: bool = True

    def from_environment(self) -> EndpointOptions:
        """These options with the base URL and model name taken from the environment where they are not set."""
        return replace(self, base_url=self.base_url or os.environ.get(ENV_BASE_URL),
                       model=self.model or os.environ.get(ENV_MODEL))

    def unset(self) -> list[str]:
        """The environment variables of the settings still missing (base URL, model name)."""
        return [env for env, v in ((ENV_BASE_URL, self.base_url), (ENV_MODEL, self.model)) if not v]


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

    def __init__(self, options: EndpointOptions):
        """``options`` with ``base_url`` and ``model`` set (:meth:`EndpointOptions.from_environment`)."""
        api_key = options.api_key
        if api_key == REDACTED:  # a config written by a run: its key was never written, take the environment's
            log.info("llm judge: the api_key of this config was redacted when it was written; using %s",
                     options.api_key_env)
            api_key = None
        key = api_key if api_key is not None else os.environ.get(options.api_key_env)
        headers = _request_headers_option(options.headers)
        decide = options.decide or "generate"
        if decide not in ENDPOINT_DECIDE:
            raise JudgeError(f"llm judge endpoint: decide must be one of {', '.join(ENDPOINT_DECIDE)}, not {decide!r} "
                             "(logprobs: the likelier of yes / no as the first token, where the server returns "
                             "log-probabilities)")
        self.base_url = str(options.base_url).strip()
        self.url = endpoint_url(self.base_url, "chat/completions")
        self.models_url = endpoint_url(self.base_url, "models")
        self.model = str(options.model)
        self._api_key = key or None
        self._headers = headers
        self.timeout = options.timeout
        self.max_retries = options.max_retries
        self.connect_retries = options.connect_retries
        self.backoff = options.backoff
        self.max_backoff = options.max_backoff
        self.max_retry_after = options.max_retry_after
        self.concurrency = max(1, options.concurrency)
        self.decide = decide
        self.max_tokens = 1 if decide == "logprobs" else (options.max_tokens or ENDPOINT_MAX_TOKENS)
        self.max_consecutive_failures = options.max_consecutive_failures
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

    def check_model_listed(self) -> None:
        """Refuse a model name the server does not list (a typo must not become the judge's identity because a
        server answers whatever model is asked for)."""
        listed = self.listed_models()
        if listed is None or self.model in listed:
            return
        shown = ", ".join(sorted(listed)[:20]) + (f" (and {len(listed) - 20} more)" if len(listed) > 20 else "")
        raise JudgeError(f"the judge endpoint {public_url(self.base_url)} serves no model "
                         f"'{self.model}'.{did_you_mean(self.model, listed)} It lists: {shown}. Set {ENV_MODEL} "
                         "(or judge_options.llm.model) to one of them.")

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
