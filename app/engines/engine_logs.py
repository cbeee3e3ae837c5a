"""The last error line of a model replica's log (it goes into crash events and failed-load reasons).

A replica's stderr is a Ray worker log file; its engine processes inherit it, so an engine's own
dying words land there too. Ray writes some lines as JSON records (``levelname``, ``message``),
vLLM and Python write plain text.
"""

from __future__ import annotations

import json
import os
import re

from app.openai_errors import clean

TAIL_BYTES = 64 * 1024
_LEVEL = re.compile(r"^\s*(?:\x1b\[[0-9;]*m)?(ERROR|CRITICAL)\b")
_ERRORISH = re.compile(r"\b\w*(?:Error|Exception)\b: |exited unexpectedly|died unexpectedly|Segmentation fault|"
                       r"core dumped|out of memory|CUDA error")


def own_log() -> str | None:
    """The file this process's stderr goes to, if it is a file."""
    try:
        target = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return target if target.startswith("/") and os.path.isfile(target) else None


def error_of(line: str) -> str | None:
    """The error a log line reports, or None if it reports none."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if record.get("levelname") in ("ERROR", "CRITICAL"):
            return str(record.get("message") or "")
        return None
    if _LEVEL.match(line) or _ERRORISH.search(line):
        return line
    return None


def last_error_line(path: str | None) -> str | None:
    """The last line of the log's tail that reports an error, cleaned for people; None if none."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        found = error_of(line)
        if found:
            return clean(found)
    return None
