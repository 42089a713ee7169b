"""Secrets are never written: every config and JSON document a run writes passes through :func:`redact_secrets`.

A judge's API key may come from the environment (never part of a config), a config file, a dotted override
(``judge_options.llm.api_key=...``), ``--judge-option llm.api_key=...`` or an extra header
(``judge_options.llm.headers``). Whatever the route, the written copy holds :data:`REDACTED` in its place:

- a value whose key is a secret's name (:data:`SECRET_NAMES`, matched exactly after lower-casing and ``-`` -> ``_``,
  so that ``prompt_tokens`` or ``max_tokens`` are never taken for a ``token``);
- every value of a ``headers`` mapping (``api-key``, ``Authorization``: headers carry credentials);
- in any ``scheme://`` URL string, the password of ``user:password@`` and the values of query parameters named like
  a secret (:data:`SECRET_QUERY_NAMES`: ``?api_key=...``, ``?sig=...``); other query parameters (``api-version``)
  are kept.

A judge reading a config back treats :data:`REDACTED` as "not given" (the key then comes from the environment).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

REDACTED = "<redacted>"

SECRET_NAMES = frozenset({
    "api_key", "apikey", "key", "openai_api_key", "azure_api_key", "x_api_key", "api_token", "token", "access_token",
    "auth_token", "bearer_token", "hf_token", "refresh_token", "id_token", "secret", "client_secret", "secret_key",
    "password", "passwd", "authorization", "proxy_authorization", "credentials",
})
# in a URL's query only: SAS signatures (Azure ``sig``), Azure Functions keys (``code``)
SECRET_QUERY_NAMES = SECRET_NAMES | {"sig", "signature", "code"}
_HEADERS = "headers"
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: Any, *, query: bool = False) -> bool:
    """Whether a key (``query``: a URL query parameter) of this name holds a secret: exact names after lower-casing
    and ``-`` -> ``_`` (``api_key``, ``API-Key``, ``token``; never ``prompt_tokens`` or ``max_tokens``)."""
    names = SECRET_QUERY_NAMES if query else SECRET_NAMES
    return isinstance(name, str) and name.strip().lower().replace("-", "_") in names


def redact_url(url: str) -> str:
    """``url`` without the password of its ``user:password@`` part and with secret-named query values redacted; the
    rest (host, path, ``api-version=...``) kept as it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None and not parts.query:
            return url
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:{REDACTED}@" + netloc.rsplit("@", 1)[1]
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = parts.query
        if any(is_secret_name(k, query=True) for k, _ in pairs):
            query = urllib.parse.urlencode([(k, REDACTED if is_secret_name(k, query=True) else v) for k, v in pairs],
                                           safe="<>")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not a URL after all (a bad port): leave the text alone
        return url


def redact_urls_in(text: str) -> str:
    """Every ``scheme://...`` URL in ``text`` through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def redact_secrets(obj: Any, *, everywhere: bool = True) -> Any:
    """A copy of ``obj`` (dicts, lists, scalars) with every secret replaced by :data:`REDACTED` (see the module
    docstring). Empty values stay empty: nothing was given.

    ``everywhere`` False (results documents: metrics.json, run.json): secret names count only inside a ``config``
    or ``*options`` mapping, so that a class named "key" in a confusion matrix keeps its counts; headers and URLs
    are redacted wherever they are."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if everywhere and is_secret_name(key) and value not in (None, ""):
                out[key] = REDACTED
            elif key == _HEADERS and isinstance(value, dict):
                out[key] = {h: (REDACTED if v not in (None, "") else v) for h, v in value.items()}
            else:
                out[key] = redact_secrets(value, everywhere=everywhere or _is_scope(key))
        return out
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v, everywhere=everywhere) for v in obj]
    if isinstance(obj, str):
        return redact_urls_in(obj)
    return obj


def _is_scope(key: Any) -> bool:
    """A mapping of settings, where a key named ``api_key`` is one: a config, judge or method options."""
    return isinstance(key, str) and (key == "config" or key.endswith("options"))
