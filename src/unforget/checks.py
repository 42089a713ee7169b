"""Check before work, for the commands and studies: every model, dataset, judge and method name of a config is
resolved before a model loads or a run folder is created, and the folder is opened only when it is empty or holds
this very run (:mod:`unforget.identity`). This module adds what the lower layers cannot know: the judges' identities
(an endpoint's public base URL and model name, never its key) and the method names of every registry.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from .config import to_dict
from .errors import ConfigError
from .evaluation.judges import llm
from .evaluation.judges.base import JUDGES
from .identity import strings_in, identity_config, open_run, run_identity
from .registry import did_you_mean
from .tailoring.base import TAILORING_METHODS
from .training.methods.base import METHODS


def judge_identity(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a judge's verdicts: its options (secrets dropped) and, for the LLM judge, the prompt version and
    the endpoint (public base URL, model) or local model, read from options or the environment as the judge does."""
    out: dict[str, Any] = {"name": name, "options": identity_config(dict(options))}
    if name in ("llm", "cascade"):
        base_url = options.get("base_url") or os.environ.get(llm.ENV_BASE_URL)
        out.update(prompt_version=llm.PROMPT_VERSION,
                   base_url=llm.public_url(base_url) if base_url else None,
                   model=options.get("model") or os.environ.get(llm.ENV_MODEL),
                   local_model=options.get("judge_model") or os.environ.get(llm.ENV_LOCAL_MODEL))
    return out


def judge_identities(data: Any) -> dict[str, Any]:
    """Every judge a config names (``judges`` lists at any depth), checked against the registry."""
    names: list[str] = []
    options: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "judges":
                    names.extend(strings_in(v))
                elif k == "judge_options" and isinstance(v, Mapping):
                    for judge, opts in v.items():
                        options.setdefault(judge, dict(opts or {}))
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(data)
    out = {}
    for name in dict.fromkeys(names):
        JUDGES.get(name)  # unknown: RegistryError with did-you-mean
        out[name] = judge_identity(name, options.get(name, {}))
    return out


def check_method_names(data: Any) -> None:
    """Fine-tuning and tailoring method names exist (did-you-mean otherwise; continual strategies are checked by
    their study config)."""
    known = set(METHODS.names()) | set(TAILORING_METHODS.names())

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "method" and isinstance(v, str) and v not in known:
                    raise ConfigError(f"unknown method '{v}'.{did_you_mean(v, sorted(known))} Fine-tuning methods: "
                                      f"{', '.join(METHODS.names())}; tailoring methods: "
                                      f"{', '.join(TAILORING_METHODS.names())}.")
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(data)


def checked_identity(cfg: Any, drop: Iterable[str] = ()) -> dict[str, Any]:
    """:func:`unforget.identity.run_identity` with the judges' identities, after every method name was checked."""
    check_method_names(cfg if isinstance(cfg, Mapping) else to_dict(cfg))
    return run_identity(cfg, drop, judges=judge_identities)


def open_checked_run(out: Any, kind: str, cfg: Any, *, main: bool = True, overwrite: bool = False,
                     drop: Iterable[str] = ()) -> Any:
    """:func:`unforget.identity.open_run` for a command or study: method names checked, judges identified."""
    check_method_names(cfg if isinstance(cfg, Mapping) else to_dict(cfg))
    return open_run(out, kind, cfg, main=main, overwrite=overwrite, drop=drop, judges=judge_identities)
