"""The event log: what happened to models, downloads and the registry, newest last on disk.

One JSON object per line in ``<state_dir>/events.jsonl``, appended by every process that acts
(the model manager for loads and unloads, the management API for edits and downloads). Each
append is one ``write`` of one line to a file opened with O_APPEND, under an exclusive lock, so
lines from different processes never interleave. The file rotates to ``events.jsonl.1`` past
``max_bytes``; reading looks at both.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

MAX_BYTES = 5 * 1024 * 1024


class EventLog:
    """Append and read events."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes

    def record(self, kind: str, **data: Any) -> dict[str, Any]:
        """Append one event (``kind`` like ``model_loaded``; ``data`` must be JSON-serialisable)."""
        event = {"time": round(time.time(), 3), "kind": kind, **data}
        line = (json.dumps(event, default=str, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size + len(line) > self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                os.close(fd)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)  # closing releases the lock
        return event

    def read(self, limit: int = 100, kind: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first, optionally only one kind prefix or one model."""
        events: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            if not path.exists():
                continue
            for line in reversed(path.read_text(errors="replace").splitlines()):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash: skip it, keep the rest
                if kind and not event.get("kind", "").startswith(kind):
                    continue
                if model and event.get("model") != model:
                    continue
                events.append(event)
                if len(events) >= limit:
                    return events
        return events
