"""The run-folder contract: everything unforget writes goes through this package.

- :mod:`.io`: atomic writes, fsynced JSONL appends, strict JSON (no NaN), :class:`RunDir`;
- :mod:`.manifest`: ``run.json`` - the run's kind, unforget's version and git sha, and the identity of everything
  that determines its numbers; a rerun into the folder resumes only when the identity matches;
- :mod:`.identity`: fingerprints of models (file sizes + safetensors headers) and datasets (content);
- :mod:`.layout`: the file names of a run folder.
"""

from .io import (JsonlAppender, RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, dumps_strict,
                 iter_jsonl, read_json, read_jsonl, strict_json)
from .layout import CONFIG, DONE, MANIFEST, METRICS, SAMPLES
from .manifest import (RunIdentityError, RunManifest, check_resumable, clear_run, ensure_manifest, new_manifest,
                       prepare_run, read_manifest, sub_run, write_manifest)

__all__ = [
    "CONFIG", "DONE", "MANIFEST", "METRICS", "SAMPLES", "JsonlAppender", "RunDir", "RunIdentityError", "RunManifest",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_resumable", "clear_run", "dumps_strict",
    "ensure_manifest", "new_manifest",
    "iter_jsonl", "prepare_run", "read_json", "read_jsonl", "read_manifest", "strict_json", "sub_run", "write_manifest",
]
