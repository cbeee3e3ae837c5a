"""The OpenAI error shape, built once, and the rule for what an error message may say.

Every failure on :8000 and :8001 leaves as ``{"error": {"message", "type", "code", "param"}}``.
A message names the model and the engine's own words, never internals: ``clean`` removes ANSI
colour codes, Ray's traceback and actor/task ids, process ids and file paths of frames, which go
to the log (and the event log) instead.
"""

from __future__ import annotations

import re
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RAY_IDS = re.compile(r"\b(actor|task|worker|node|lease|object)(?:_?id)?[ =:]*[0-9a-f]{16,}\b", re.I)
_HEX_IDS = re.compile(r"\b[0-9a-f]{24,}\b")
_PIDS = re.compile(r"\(?\b(?:pid|PID)[=: ]\s*\d+\)?,?\s*")
_RAY_PREFIX = re.compile(r"^\s*\((?:[A-Za-z_:.]+ )?pid=\d+[^)]*\)\s*")
_MODULE_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z]\w*(?:Error|Exception|Exit)\b)")  # vllm.v1.x.EngineDeadError
_FRAME = re.compile(r'^\s*(File ".*", line \d+|Traceback \(most recent call last\)|\^+$|~+\^+~*$|'
                    r'For further information visit )')  # the last is pydantic's footer
_PYDANTIC_TAIL = re.compile(r"\s*\[type=\w+, input_value=.*$")
MAX_MESSAGE = 500
# The error code for a request that matched no route or method (both servers say it the same way).
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def clean(message: object) -> str:
    """One readable line from an error text: the most specific line, without internals."""
    text = _ANSI.sub("", str(message))
    lines = [_RAY_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not _FRAME.match(line) and not line.startswith("ray::")]
    # A traceback or a Ray error puts the exception last; plain messages are one line anyway.
    line = lines[-1] if lines else "unknown error"
    line = _PYDANTIC_TAIL.sub("", line).removeprefix("Value error, ")
    line = _PIDS.sub("", _HEX_IDS.sub("", _RAY_IDS.sub(r"\1", _MODULE_PATH.sub("", line))))
    line = re.sub(r"\s{2,}", " ", line).strip(" :,;")
    return line[:MAX_MESSAGE] or "unknown error"


def body(message: str, type_: str, code: str, **extra: Any) -> dict[str, Any]:
    """The OpenAI error body."""
    return {"error": {"message": message, "type": type_, "code": code, "param": None, **extra}}
