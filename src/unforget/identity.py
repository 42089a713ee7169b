"""The identity of a run, from its config: what its folder's ``run.json`` stores (:mod:`unforget.runs.manifest`).

:func:`run_identity` resolves every model and dataset name of a config (a typo in the second dataset or a zoo-name
typo fails in a second with a did-you-mean, makes no hub call and leaves nothing behind) and returns the resolved
config minus what changes speed but not the numbers (output folder, devices, evaluation batch sizes, logging), plus
each model's weights fingerprint and each dataset's resolved location and content fingerprint. Judges are
identified by the layer that knows them (:mod:`unforget.checks` passes their identities in). :func:`open_run` is
the one way a command or study opens the folder it writes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from .config import to_dict
from .data.identity import dataset_identity
from .models.identity import check_model_name, model_identity
from .runs import RunDir, check_resumable, clear_run, prepare_run
from .runs.secrets import is_secret_name

# settings that change speed or logging, not the numbers a run reports
NON_IDENTITY_KEYS = frozenset({"out", "device", "device_map", "attn_implementation", "num_workers",
                               "log_every_steps", "save_every_steps", "tensorboard", "keep_checkpoints",
                               "overwrite", "cache_vision_features"})
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


def strings_in(value: Any) -> Iterable[str]:
    """The strings of a config value (a string, or a list of them at any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


def dataset_refs(data: Any) -> list[str]:
    """Every dataset reference a config names (eval / training / study sections, 2x2 cells), in order."""
    found: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k in DATASET_KEYS or key == "cells":
                    found.extend(strings_in(v) if not isinstance(v, Mapping) else ())
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
                    specs.extend({"name": s} for s in strings_in(v))
                elif k in ("base", "checkpoint") and isinstance(v, str) and v:
                    specs.append({"name": v})
                else:
                    walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(data)
    return specs


def run_identity(cfg: Any, drop: Iterable[str] = (),
                 judges: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Resolve every model and dataset name in ``cfg`` (a config dataclass or mapping) and return its run identity.
    Raises the loader's error for the first name that does not resolve; loads nothing heavier than the datasets
    (which it fingerprints). ``judges(config mapping)`` gives the judges' identities (and checks their names)."""
    data = cfg if isinstance(cfg, Mapping) else to_dict(cfg)
    specs = model_specs(data)
    for spec in specs:  # names first: a typo fails before any fingerprinting
        check_model_name(spec["name"])
        if spec.get("adapter"):
            check_model_name(spec["adapter"], what="adapter")
    judge_ids = judges(data) if judges is not None else {}
    datasets = {ref: dataset_identity(ref) for ref in dataset_refs(data)}
    models = {spec["name"] + (f"+{spec['adapter']}" if spec.get("adapter") else ""): model_identity(spec)
              for spec in specs}
    config = {k: v for k, v in identity_config(data).items() if k not in set(drop)}
    return {"config": config, "models": models, "datasets": datasets, "judges": judge_ids}


def open_run(out: Any, kind: str, cfg: Any, *, main: bool = True, overwrite: bool = False,
             drop: Iterable[str] = (), judges: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None) -> Any:
    """Resolve every name in ``cfg``, check that ``out`` is empty or holds this very run (same kind and identity),
    then create it and write its ``run.json`` (main process only): the one way a command or study opens its
    folder. ``overwrite`` deletes a previous run there first."""
    identity = run_identity(cfg, drop, judges)
    if not main:
        check_resumable(out, kind, identity)
        return RunDir(out)
    if overwrite:
        clear_run(out)
    return prepare_run(out, kind, identity)
