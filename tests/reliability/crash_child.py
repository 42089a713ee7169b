"""`unforget ARGS` in a child process that SIGKILLs itself at a chosen commit point (used by the kill tests).

Commit points are where a run's state on disk changes: every ``os.replace`` / ``os.rename`` (each atomic file write
and each checkpoint folder put into place) and every ``JsonlAppender.write`` (one sample, probe or log line). Each
counts twice, once just before and once just after; ``UNFORGET_KILL_AT=k`` kills the process at the k-th count. A
kill before a JSONL append first writes half of the line (a power cut mid-write), a kill before a rename leaves its
temporary file behind. ``UNFORGET_EVENTS_FILE`` receives the number of counts a run made (0 kills nothing).
"""

import atexit
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: finetune_helpers

import torch  # noqa: E402

torch.set_num_threads(1)

from finetune_helpers import register_datasets  # noqa: E402

register_datasets()

import unforget.runs as runs  # noqa: E402

KILL_AT = int(os.environ.get("UNFORGET_KILL_AT", "0"))
EVENTS_FILE = os.environ.get("UNFORGET_EVENTS_FILE")
count = 0


def due() -> bool:
    global count
    count += 1
    return count == KILL_AT


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def committing(original):
    def commit(src, dst, *args, **kwargs):
        if due():
            die()
        original(src, dst, *args, **kwargs)
        if due():
            die()
    return commit


os.replace = committing(os.replace)
os.rename = committing(os.rename)
append = runs.JsonlAppender.write


def write(self, record):
    if due():
        line = json.dumps(record, default=runs._json_default)
        self._fh.write(line[: max(1, len(line) // 2)])
        self._fh.flush()
        die()
    append(self, record)
    if due():
        die()


runs.JsonlAppender.write = write

if EVENTS_FILE:
    atexit.register(lambda: Path(EVENTS_FILE).write_text(str(count)))

from unforget.cli import main  # noqa: E402

raise SystemExit(main(sys.argv[1:]))
