"""On-disk cache of judge verdicts: a rerun of the same judgement costs no model call.

The layout follows lmms-eval's response cache (lmms_eval/caching/response_cache.py): SQLite in WAL mode is the
lookup store, and a JSONL audit log is appended and fsynced *before* the SQLite upsert, so a crash between the two
loses nothing - on open, log lines missing from SQLite are replayed into it. Several processes may write the same
cache folder at once: SQLite serialises writers (busy timeout), and each log line goes out in one ``write`` of an
``O_APPEND`` file under an advisory lock, so lines never interleave.

Keys are ``sha256`` of (the judge's full identity, question, answer, label). The identity is everything that can
change a verdict: for an endpoint its public base URL (query kept, credentials out), the configured model name, the
prompt version, max_tokens and the decide mode; for a local model its path and decide mode. Verdicts cached from
one server are never served for another. Nothing secret is ever stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Mapping

from ...runs import dumps_strict

try:  # advisory lock around log appends (POSIX); elsewhere O_APPEND alone keeps short lines whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DB_NAME = "judge_cache.sqlite"
LOG_NAME = "judge_cache.jsonl"
_SCHEMA_VERSION = 2  # 2: keyed by the judge's whole identity (1 had the model name only: any server's verdicts)
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS verdicts (
    cache_key   TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
"""
_BUSY_TIMEOUT_S = 60.0


def judge_cache_key(judge: Mapping[str, Any], question: str, answer: str, label: str) -> str:
    """The cache key of one judgement: sha256 of the judge's identity (a JSON-able mapping holding no secret) and the
    judgement's inputs, as canonical JSON so that no field can bleed into another."""
    payload = json.dumps({"v": _SCHEMA_VERSION, "judge": judge, "q": question, "a": answer, "label": label},
                         sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$UNFORGET_JUDGE_CACHE``, else ``$XDG_CACHE_HOME/unforget/judges`` (``~/.cache/unforget/judges``)."""
    env = os.environ.get("UNFORGET_JUDGE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unforget" / "judges"


class JudgeCache:
    """Verdict records by cache key, in ``folder/judge_cache.sqlite`` + ``folder/judge_cache.jsonl``.

    Use from one thread (the judge stores results as they complete, in its calling thread); use one instance per
    process - several processes sharing the folder is safe."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db_path = self.folder / DB_NAME
        self.log_path = self.folder / LOG_NAME
        # one thread at a time, not necessarily the one that opened it (check_same_thread off)
        self._db = sqlite3.connect(str(self.db_path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
        self._retry_locked(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._retry_locked(lambda: self._db.executescript(_SCHEMA_SQL))
        self._replay_log()
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @staticmethod
    def _retry_locked(fn: Any) -> Any:
        # Switching to WAL / creating the table needs an exclusive lock; two processes opening a fresh cache at
        # the same moment can see "database is locked" before the busy handler applies.
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _replay_log(self) -> None:
        """Upsert log lines missing from SQLite (a crash after the log append, before the upsert)."""
        if not self.log_path.exists():
            return
        rows = []
        with open(self.log_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    rows.append((rec["cache_key"], dumps_strict(rec["record"]), float(rec.get("created_at", 0.0))))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a torn last line from a crash: its upsert never happened either
        if not rows:
            return
        with self._db:
            before = self._db.total_changes
            self._retry_locked(lambda: self._db.executemany(
                "INSERT OR IGNORE INTO verdicts (cache_key, record, created_at) VALUES (?, ?, ?)", rows))
            replayed = self._db.total_changes - before
        if replayed:
            log.info("judge cache %s: replayed %d verdicts from the audit log", self.folder, replayed)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT record FROM verdicts WHERE cache_key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Append ``record`` to the audit log (fsynced), then upsert it into SQLite."""
        now = time.time()
        line = (dumps_strict({"cache_key": key, "created_at": now, "record": record}, ensure_ascii=False) + "\n")
        self._append(line.encode("utf-8"))
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO verdicts (cache_key, record, created_at) VALUES (?, ?, ?)",
                             (key, dumps_strict(record, ensure_ascii=False), now))

    def _append(self, data: bytes) -> None:
        if fcntl is not None:
            fcntl.flock(self._log_fd, fcntl.LOCK_EX)
        try:
            written = 0
            while written < len(data):
                written += os.write(self._log_fd, data[written:])
            os.fsync(self._log_fd)
        finally:
            if fcntl is not None:
                fcntl.flock(self._log_fd, fcntl.LOCK_UN)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1
        self._db.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
