"""What :8000 answers when it cannot simply forward: every error, built from the manager's outcome
and model view (pure functions), in the OpenAI shape, naming the model and the engine's own
words; internals (tracebacks, Ray ids, pids, ANSI codes) go to the log only."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi.responses import JSONResponse

from app.lifecycle.states import Outcome
from app.openai_errors import body, clean

log = logging.getLogger("llmbox.router")
DONE = "data: [DONE]\n\n"


def error(status: int, message: str, type_: str, code: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    """A response in the OpenAI error shape."""
    return JSONResponse(body(message, type_, code, **extra), status_code=status, headers=headers)


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def heartbeat(model_id: str, seconds: float, state: str = "loading") -> str:
    """An SSE comment: keeps the connection (and the user) informed while the model loads."""
    return f": {state} {model_id} ({seconds:.0f} s)\n\n"


def not_found(model_id: str) -> JSONResponse:
    return error(404, f"model {model_id!r} does not exist", "invalid_request_error", "model_not_found")


def not_served(model_id: str) -> JSONResponse:
    return error(404, f"model {model_id!r} is in the registry but not served (serve: false)",
                 "invalid_request_error", "model_not_served")


def unavailable(status: int, message: str, code: str, retry_s: float, **extra: Any) -> JSONResponse:
    return error(status, message, "server_error", code, headers={"Retry-After": str(max(1, math.ceil(retry_s)))},
                 **extra)


def _failure(view: dict, outcome: Outcome) -> tuple[str, str, float]:
    if outcome == Outcome.FAILED:
        return (f"model {view['id']!r} failed to load: {view.get('last_error') or 'unknown reason'}",
                "model_load_failed", view.get("retry_in_s") or 1)
    return (f"model {view['id']!r} could not be loaded: {view.get('last_error') or 'unknown reason'}",
            "model_unavailable", 5)


def failed(view: dict, outcome: Outcome) -> JSONResponse:
    """503 for a failed load (with its backoff) or a refused one (not enough memory)."""
    message, code, retry = _failure(view, outcome)
    return unavailable(503, message, code, retry)


def failed_event(view: dict, outcome: Outcome) -> str:
    """The same failure as an SSE event inside a stream that has already begun."""
    message, code, _ = _failure(view, outcome)
    return sse(body(message, "server_error", code))


def downloading(view: dict) -> JSONResponse:
    """503 for a model whose weights are not downloaded yet (download time is not load time)."""
    download = view.get("download") or {}
    if view["state"] == "downloading":
        done = f" ({download['percent']:.0f}% done)" if download.get("percent") is not None else ""
        return unavailable(503, f"model {view['id']!r} is downloading{done}; retry when it completes",
                           "model_downloading", download.get("eta_s") or 30, download=download or None)
    why = f" (last download {download['state']}: {download.get('error')})" if download else ""
    return unavailable(503, f"model {view['id']!r} is not downloaded{why}: start its download in the "
                       "management API or admin UI", "model_not_downloaded", 60, download=download or None)


def loading(view: dict) -> JSONResponse:
    """503 + Retry-After for a request that waited its bound while the model loads (or restarts)."""
    progress = view.get("loading") or {"state": view["state"], "elapsed_s": 0.0, "expected_s": view.get("last_load_s")}
    remaining = (progress.get("expected_s") or 30) - progress.get("elapsed_s", 0)
    what = "is restarting after a crash" if progress.get("state") == "restarting" else "is loading"
    return unavailable(503, f"model {view['id']!r} {what}; retry shortly", "model_loading", remaining,
                       loading=progress)


def refusal(outcome: Outcome, model_id: str, view: dict | None) -> JSONResponse:
    """The answer for an outcome that is neither READY nor PENDING."""
    if outcome == Outcome.UNKNOWN or view is None:
        return not_found(model_id)
    if outcome == Outcome.NOT_SERVED:
        return not_served(model_id)
    if outcome == Outcome.DOWNLOADING:
        return downloading(view)
    if outcome == Outcome.PENDING:
        return loading(view)
    return failed(view, outcome)


def refusal_event(outcome: Outcome, model_id: str, view: dict | None) -> str:
    """``refusal`` as an SSE event, for a stream whose heartbeats have already been sent."""
    response = refusal(outcome, model_id, view)
    return f"data: {response.body.decode()}\n\n"


def manager_unavailable(exc: BaseException) -> JSONResponse:
    """The model manager did not answer (it restarts by itself within seconds)."""
    log.warning("model manager call failed: %r", exc)
    return unavailable(503, "the model manager is restarting; retry shortly", "manager_unavailable", 2)


def engine_error(model_id: str, exc: ConnectionError) -> JSONResponse:
    """503 for a replica that could not be reached or dropped the connection (the data path's own
    words: app/serving/proxy.py UpstreamError)."""
    log.warning("request to %s failed: %r", model_id, exc)
    return engine_failed(model_id, str(exc))


def engine_failed(model_id: str, why: str) -> JSONResponse:
    """503 for a model whose engine failed (or answered with a server error) while answering."""
    return unavailable(503, f"model {model_id!r} failed while answering: {why}", "model_error", 2)


def engine_error_event(model_id: str, exc: ConnectionError) -> str:
    log.warning("stream from %s failed: %r", model_id, exc)
    return sse(body(f"model {model_id!r} failed while answering: {exc}", "server_error", "model_error"))


def from_engine_answer(model_id: str, status: int, raw: bytes, path: str = "") -> JSONResponse:
    """An error answer of the model's own vLLM app (``{"error": {message, type, param, code}}``, or
    FastAPI's ``{"detail": ...}``), with its status, naming the model; internals cleaned."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    info = data.get("error") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        detail = data.get("detail") if isinstance(data, dict) else None
        info = {"message": detail if detail is not None else raw[:2000].decode("utf-8", "replace")}
    message = clean(str(info.get("message")))
    if status >= 500:
        return engine_failed(model_id, message)
    if status == 404 and message == "Not Found":  # the route, not the model: its task has no such route
        message = f"{path or 'this route'} is not served for this model's task"
    kind = info.get("type")
    if not (isinstance(kind, str) and kind.endswith("_error")):  # vLLM says "Bad Request" and the like
        kind = "invalid_request_error"
    return error(status, f"model {model_id!r}: {message}", kind, str(info.get("code") or status),
                 param=info.get("param"))


ERROR_EVENT = 'data: {"error"'


def named_errors(model_id: str, text: str) -> str:
    """Error events inside a model's own stream, rewritten to name the model in our error shape
    (vLLM sends e.g. ``{"message": "EngineCore encountered an issue...", "type": "InternalServerError",
    "code": 500}`` when its engine dies mid-stream)."""
    out = []
    for event in text.split("\n\n"):
        if event.startswith(ERROR_EVENT):
            try:
                info = json.loads(event[len("data: "):])["error"]
                event = sse(body(f"model {model_id!r} failed while answering: {clean(info.get('message'))}",
                                 "server_error", "model_error"))[:-2]
            except (ValueError, KeyError, TypeError):
                pass
        out.append(event)
    return "\n\n".join(out)


def _deadline_message(model_id: str, timeout_s: float) -> str:
    return (f"model {model_id!r} did not finish within the request deadline of {timeout_s:g} s "
            "(LLMBOX_REQUEST_TIMEOUT_S): the request was cancelled")


def deadline(model_id: str, timeout_s: float) -> JSONResponse:
    return error(504, _deadline_message(model_id, timeout_s), "server_error", "request_timeout")


def deadline_event(model_id: str, timeout_s: float) -> str:
    return sse(body(_deadline_message(model_id, timeout_s), "server_error", "request_timeout"))


def model_not_allowed(key_name: str, model_id: str) -> JSONResponse:
    return error(403, f"key {key_name!r} may not use model {model_id!r}", "permission_error", "model_not_allowed")
