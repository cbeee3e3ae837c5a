"""The last error line of a model replica's log (it goes into crash events and failed-load reasons).

A replica's stderr is a Ray worker log file; its engine processes inherit it, so an engine's own
dying words land there too.
"""

from __future__ import annotations

import os
import re

from app.openai_errors import clean

TAIL_BYTES = 64 * 1024
_ERRORISH = re.compile(r"ERROR|CRITICAL|Error\b|Exception\b|exited unexpectedly|died unexpectedly|Killed|"
                       r"Traceback|Segmentation fault|core dumped|out of memory", re.I)


def own_log() -> str | None:
    """The file this process's stderr goes to, if it is a file."""
    try:
        target = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return target if target.startswith("/") and os.path.isfile(target) else None


def last_error_line(path: str | None) -> str | None:
    """The last line of the log's tail that reads like an error, cleaned for people; None if none."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if _ERRORISH.search(line) and not line.lstrip().startswith(("File ", "Traceback")):
            return clean(line)
    return None
