"""Check before work: resolve every model, dataset, judge and method name of a config, and build the identity that
its run folder's ``run.json`` stores (:mod:`unforget.runs.manifest`).

Commands call :func:`run_identity` before a model loads or a run folder is created, so a typo in the second dataset
or a zoo-name typo fails in a second with a did-you-mean, leaves nothing behind and makes no hub call. The identity
is the resolved config minus what changes speed but not the numbers (output folder, devices, evaluation batch
sizes, logging), plus each model's weights fingerprint, each dataset's resolved location and content fingerprint,
and each judge's identity (an endpoint's public base URL and model name, never its key).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from .config import to_dict
from .errors import ConfigError
from .registry import did_you_mean
from .runs.secrets import is_secret_name

# settings that change speed or logging, not the numbers a run reports
NON_IDENTITY_KEYS = frozenset({"out", "device", "device_map", "attn_implementation", "num_workers",
                               "log_every_steps", "save_every_steps", "tensorboard", "keep_checkpoints",
                               "overwrite"})
# sections whose batch size only batches inference (a training batch size changes the numbers: kept)
INFERENCE_SECTIONS = frozenset({"eval", "probe", "language"})
DATASET_KEYS = frozenset({"dataset", "datasets", "extra_datasets", "leak_labels", "label_set", "tasks",
                          "original"})


def _is_secret(key: str) -> bool:
    """Credentials (API keys, headers) are never part of an identity: one list of names, in runs.secrets."""
    return key == "headers" or is_secret_name(key)


def identity_config(data: Any, section: str = "") -> Any:
    """The config mapping minus non-identity settings and secrets."""
    if isinstance(data, Mapping):
        out = {}
        for k, v in data.items():
            if k in NON_IDENTITY_KEYS or _is_secret(str(k)):
                continue
            if k == "batch_size" and section in INFERENCE_SECTIONS:
                continue
            out[k] = identity_config(v, str(k))
        return out
    if isinstance(data, (list, tuple)):
        return [identity_config(v, section) for v in data]
    return data


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def dataset_refs(data: Any) -> list[str]:
    """Every dataset reference a config names (eval / training / study sections, 2x2 cells), in order."""
    found: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k in DATASET_KEYS or key == "cells":
                    found.extend(_strings(v) if not isinstance(v, Mapping) else ())
                    if k == "cells" and isinstance(v, Mapping):
                        found.extend(s for s in v.values() if isinstance(s, str))
                walk(v, str(k))
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, key)

    walk(data)
    return list(dict.fromkeys(r for r in found if r))


def model_specs(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The models a config loads: ``model`` sections, a survey's ``models``, a tailoring run's base and
    fine-tuned checkpoints, a tailor study's given target checkpoints."""
    specs: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "model" and isinstance(v, Mapping) and v.get("name"):
                    specs.append(dict(v))
                elif k in ("models", "finetuned") :
                    specs.extend({"name": s} for s in _strings(v))
                elif k in ("base", "checkpoint") and isinstance(v, str) and v:
                    specs.append({"name": v})
                else:
                    walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(data)
    return specs


def judge_identity(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a judge's verdicts: its options (secrets dropped) and, for the LLM judge, the prompt version and
    the endpoint (public base URL, model) or local model, read from options or the environment as the judge does."""
    out: dict[str, Any] = {"name": name, "options": identity_config(dict(options))}
    if name in ("llm", "cascade"):
        from .evaluation.judges import llm

        base_url = options.get("base_url") or os.environ.get(llm.ENV_BASE_URL)
        out.update(prompt_version=llm.PROMPT_VERSION,
                   base_url=llm.public_url(base_url) if base_url else None,
                   model=options.get("model") or os.environ.get(llm.ENV_MODEL),
                   local_model=options.get("judge_model") or os.environ.get(llm.ENV_LOCAL_MODEL))
    return out


def judge_identities(data: Any) -> dict[str, Any]:
    """Every judge a config names (``judges`` lists at any depth), checked against the registry."""
    from .evaluation.judges.base import JUDGES

    names: list[str] = []
    options: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "judges":
                    names.extend(_strings(v))
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
    """Fine-tuning / tailoring method and continual strategy names exist (did-you-mean otherwise)."""
    from .tailoring.base import TAILORING_METHODS
    from .training.methods.base import METHODS

    known = set(METHODS.names()) | set(TAILORING_METHODS.names())

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "method" and isinstance(v, str) and v not in known:
                    raise ConfigError(f"unknown method '{v}'.{did_you_mean(v, sorted(known))} Fine-tuning methods: "
                                      f"{', '.join(METHODS.names())}; tailoring methods: "
                                      f"{', '.join(TAILORING_METHODS.names())}.")
                if k == "strategy" and isinstance(v, str):
                    from .studies.continual_strategies import STRATEGIES

                    STRATEGIES.get(v)
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(data)


def run_identity(cfg: Any, drop: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve every name in ``cfg`` (a config dataclass or mapping) and return its run identity. Raises the
    registry's / loader's error for the first name that does not resolve; loads nothing heavier than the datasets
    (which it fingerprints)."""
    from .data.identity import dataset_identity
    from .models.identity import check_model_name, model_identity

    data = cfg if isinstance(cfg, Mapping) else to_dict(cfg)
    specs = model_specs(data)
    for spec in specs:  # names first: a typo fails before any fingerprinting
        check_model_name(spec["name"])
        if spec.get("adapter"):
            check_model_name(spec["adapter"], what="adapter")
    judges = judge_identities(data)
    check_method_names(data)
    datasets = {ref: dataset_identity(ref) for ref in dataset_refs(data)}
    models = {spec["name"] + (f"+{spec['adapter']}" if spec.get("adapter") else ""): model_identity(spec)
              for spec in specs}
    config = {k: v for k, v in identity_config(data).items() if k not in set(drop)}
    return {"config": config, "models": models, "datasets": datasets, "judges": judges}


def open_run(out: Any, kind: str, cfg: Any, *, main: bool = True, overwrite: bool = False,
             drop: Iterable[str] = ()) -> Any:
    """Resolve every name in ``cfg``, check that ``out`` is empty or holds this very run (same kind and identity),
    then create it and write its ``run.json`` (main process only): the one way a command or study opens its
    folder. ``overwrite`` deletes a previous run there first."""
    from .runs import RunDir, check_resumable, clear_run, prepare_run

    identity = run_identity(cfg, drop)
    if not main:
        check_resumable(out, kind, identity)
        return RunDir(out)
    if overwrite:
        clear_run(out)
    return prepare_run(out, kind, identity)
