"""The router: the Ray Serve ingress on :8000 that speaks the OpenAI API for every model.

It resolves models from the model manager's live state (so new models appear without a
redeploy), asks the manager to load a model on demand, keeps clients informed while it loads
(SSE heartbeats when streaming, 503 + Retry-After otherwise), and forwards to the model's own
Serve application. Every error leaves in the OpenAI shape ``{"error": {message, type, code}}``.

Two things keep the hot path short (bench/overhead):
- The router's replica listens on :8000 itself, as Serve's own "direct ingress" does, so a
  request does not pass through Serve's proxy first (that hop alone cost ~8 ms per request).
- A model the manager reported ready is served under a lease (app/serving/leases.py):
  requests skip the manager and are counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingCompletionRequest,
)
from starlette.exceptions import HTTPException

from app.engines.llm_config import DEPLOYMENT_NAME, app_name
from app.lifecycle import manager as manager_mod
from app.serving import metrics
from app.serving.leases import Leases

MAX_BODY_BYTES = 8 * 1024 * 1024
# ray.serve.llm's own request models: the same validation the engine side applies.
REQUEST_CLASSES = {"chat": ChatCompletionRequest, "completions": CompletionRequest,
                   "embeddings": EmbeddingCompletionRequest}


@dataclass(frozen=True)
class RouterConfig:
    """Router settings; frozen plain data so a redeploy with the same values changes nothing."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: tuple[str, ...] = ()  # sha256 of each accepted key: keys never leave the driver
    load_wait_s: float = 30.0
    heartbeat_s: float = 2.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error(status: int, message: str, type_: str, code: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    """A response in the OpenAI error shape."""
    body = {"error": {"message": message, "type": type_, "code": code, "param": None, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _is_error(item) -> bool:
    return type(item).__name__ == "ErrorResponse"


def _error_from_engine(item) -> JSONResponse:
    info = item.error
    status = int(info.code) if str(info.code).isdigit() else 500
    return error(status, info.message, info.type or "invalid_request_error", str(info.code), param=info.param)


def _join(item) -> str:
    return "".join(item) if isinstance(item, list) else str(item)


api = FastAPI(title="llmbox", docs_url=None, redoc_url=None)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error(400, f"invalid request: {exc.errors()}", "invalid_request_error", "invalid_request")


@api.exception_handler(HTTPException)
async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(exc.status_code, str(exc.detail), "invalid_request_error", code)


OPEN_PATHS = {"/health"}  # liveness stays open; everything else needs a key when keys are set


class RequireKey:
    """Bearer-key check for every route but OPEN_PATHS (one place, not one per handler).

    Plain ASGI rather than ``@app.middleware``: Starlette's BaseHTTPMiddleware re-wraps every
    response body, which costs measurable time per streamed chunk.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        hashes = scope["app"].state.api_key_hashes  # the app serving this request (Starlette sets it)
        if scope["type"] == "http" and hashes and \
                scope["path"].removeprefix(scope.get("root_path", "")) not in OPEN_PATHS:
            headers = dict(scope["headers"])
            scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            presented = hash_key(key.strip()) if scheme.lower() == "bearer" and key.strip() else ""
            if not any(hmac.compare_digest(presented, h) for h in hashes):
                response = error(401, "missing or invalid API key: send Authorization: Bearer <key>",
                                 "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(RequireKey)
api.state.api_key_hashes = ()


class _Listener(uvicorn.Server):
    """uvicorn inside a Serve replica: the replica, not uvicorn, owns the process's signals."""

    def capture_signals(self):
        return contextlib.nullcontext()


class _AfterInit:
    """Hold requests that arrive in the moment between binding the port and Serve finishing the
    replica's set-up: until then the routes cannot find their ``self``."""

    def __init__(self, app) -> None:
        self.app = app
        self.ready = False

    async def __call__(self, scope, receive, send) -> None:
        while not self.ready:
            if serve.get_replica_context().servable_object is not None:
                self.ready = True
            else:
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


async def listen(app, host: str, port: int) -> _Listener:
    """Serve ``app`` on host:port from this process; returns once it accepts connections."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A replacement replica may start before this one has finished draining: let both bind.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"the router cannot listen on {host}:{port}: {exc.strerror}") from None
    server = _Listener(uvicorn.Config(_AfterInit(app), lifespan="off", access_log=False, log_config=None,
                                      loop="none"))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            raise RuntimeError(f"the router's HTTP server on {host}:{port} stopped: {serving.exception()}")
        await asyncio.sleep(0.01)
    server.serving = serving  # keep a reference: the loop holds tasks only weakly
    return server


def _once(action):
    """``action`` wrapped so that only its first call does anything (a request ends once)."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


# Everything the class uses is defined above it: Serve pickles the class when it is decorated.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(api)
class Router:
    async def __init__(self, config: RouterConfig) -> None:
        self.config = config
        api.state.api_key_hashes = config.api_key_hashes  # read by RequireKey; one router per process
        self.manager = manager_mod.handle()  # here, not on the first request: the lookup blocks
        self._handles: dict[str, Any] = {}
        self.leases = Leases()
        self._server = await listen(api, config.host, config.port)
        context = serve.get_replica_context()
        await self.manager.attach_router.remote(context.app_name, context.deployment)

    def check_health(self) -> None:
        """Serve calls this periodically: a router whose HTTP server has stopped gets replaced."""
        if self._server.serving.done():
            raise RuntimeError(f"the router's HTTP server on {self.config.host}:{self.config.port} has stopped")

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: stop accepting, finish what is in flight."""
        if getattr(self, "_server", None) is not None:
            self._server.should_exit = True

    # --- the manager's side of the leases ----------------------------------------------------
    async def usage(self) -> dict[str, dict[str, Any]]:
        """Fast-path requests in flight and last use, per model (the manager merges them)."""
        return self.leases.usage()

    async def revoke(self, model_id: str, number: int) -> dict[str, Any]:
        """Close the fast path for a model the manager is about to unload; returns its usage."""
        return self.leases.revoke(model_id, number)

    # --- plumbing ------------------------------------------------------------------------
    def _handle(self, model_id: str):
        if model_id not in self._handles:
            self._handles[model_id] = serve.get_deployment_handle(
                DEPLOYMENT_NAME, app_name=app_name(model_id), _check_exists=False
            ).options(stream=True)
        return self._handles[model_id]

    async def _body(self, request: Request) -> dict | JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error", "body_too_large")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return error(400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object", "invalid_request_error", "invalid_request")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return error(400, "'model' is required (a string naming a served model)", "invalid_request_error",
                         "model_required")
        return body

    # --- OpenAI endpoints ----------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict:
        """Liveness of the router (no auth)."""
        return {"status": "ok"}

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        """Every served model with its state (unloaded / loading / ready / failed)."""
        status = await self.manager.status.remote()
        return {"object": "list", "data": [self._model_card(m) for m in status["models"] if m["serve"]]}

    @api.get("/v1/models/{model_id}")
    async def get_model(self, model_id: str, request: Request):
        """One served model."""
        status = await self.manager.status.remote()
        for m in status["models"]:
            if m["id"] == model_id and m["serve"]:
                return self._model_card(m)
        return error(404, f"model {model_id!r} does not exist", "invalid_request_error", "model_not_found")

    @staticmethod
    def _model_card(m: dict) -> dict:
        card = {"id": m["id"], "object": "model", "created": int(m["since"]), "owned_by": "llmbox",
                "task": m["task"], "state": m["state"], "always_on": m["always_on"], "memory_gb": m["memory_gb"]}
        for key in ("loading", "last_error", "download"):
            if m.get(key):
                card[key] = m[key]
        return card

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        return await self._serve_request(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._serve_request(request, "completions")

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request):
        return await self._serve_request(request, "embeddings")

    @api.get("/metrics")
    async def prometheus(self, request: Request):
        """Lifecycle metrics in the Prometheus text format."""
        snapshot = await self.manager.metrics_snapshot.remote()
        return Response(metrics.render(snapshot), media_type="text/plain; version=0.0.4")

    @api.post("/models/load")
    async def load(self, request: Request):
        """llama.cpp-compatible: start loading a model now."""
        return await self._control(request, "load")

    @api.post("/models/unload")
    async def unload(self, request: Request):
        """llama.cpp-compatible: unload a model now (returns when it is gone)."""
        return await self._control(request, "unload")

    async def _control(self, request: Request, action: str):
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        result = await getattr(self.manager, action).remote(body["model"])
        if result["outcome"] == "downloading":
            return self._downloading(result["model"])
        if result["outcome"] != "ok":
            return self._not_available(body["model"], result["outcome"])
        return {"success": True, "model": result["model"]["id"], "state": result["model"]["state"]}

    # --- the request path ----------------------------------------------------------------
    async def _serve_request(self, request: Request, method: str):
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            parsed = REQUEST_CLASSES[method](**body)
        except ValidationError as exc:
            return error(400, f"invalid request: {exc.errors(include_url=False)}", "invalid_request_error",
                         "invalid_request")
        model_id = body["model"]
        streaming = bool(body.get("stream"))
        if self.leases.begin(model_id):  # the fast path: no round trip to the manager
            end = _once(lambda: self.leases.end(model_id))
            try:
                return await self._forward(method, parsed, model_id, streaming, end)
            except BaseException:
                end()
                raise
        queued_at = time.time()
        got = await self.manager.acquire.remote(model_id)
        if got["outcome"] in ("unknown", "not_served"):
            return self._not_available(model_id, got["outcome"])
        if got["outcome"] == "failed":
            return self._failed(got["model"])
        if got["outcome"] == "downloading":
            return self._downloading(got["model"])
        # Fire and forget: the reply does not depend on it, and calls from one caller reach the
        # actor in order, so it is never counted out before it was counted in.
        release = _once(lambda: self.manager.release.remote(model_id))
        try:
            if got["outcome"] == "ready":
                self.leases.grant(model_id, got["lease"])
                return await self._forward(method, parsed, model_id, streaming, release)
            if streaming:
                return StreamingResponse(self._stream_while_loading(method, parsed, model_id, queued_at, release),
                                         media_type="text/event-stream")
            view = await self.manager.wait.remote(model_id, self.config.load_wait_s, queued_at)
            if view["state"] == "ready":
                return await self._forward(method, parsed, model_id, False, release)
            release()
            return self._not_ready(view)
        except BaseException:
            release()
            raise

    async def _forward(self, method: str, parsed, model_id: str, streaming: bool, release):
        """Send the request to the model's app; the first item decides the status code."""
        gen = getattr(self._handle(model_id), method).remote(parsed)
        try:
            first = await gen.__anext__()
        except BaseException as exc:
            release()
            if isinstance(exc, StopAsyncIteration):
                return error(502, "the model returned nothing", "api_error", "empty_response")
            return error(503, f"model {model_id!r} failed while answering: {exc}", "api_error", "model_error")
        head = first[0] if isinstance(first, list) and first else first
        if _is_error(head):
            release()
            return _error_from_engine(head)
        if not streaming:
            release()
            return JSONResponse(head.model_dump(exclude_none=True) if hasattr(head, "model_dump") else head)

        async def chunks():
            try:
                yield _join(first)
                async for item in gen:
                    yield _join(item)
            finally:
                release()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def _stream_while_loading(self, method: str, parsed, model_id: str, queued_at: float, release):
        """SSE: comment heartbeats while the model loads, then the model's own stream."""
        try:
            while True:
                view = await self.manager.wait.remote(model_id, self.config.heartbeat_s, queued_at)
                if view["state"] == "ready":
                    break
                if view["state"] != "loading":
                    yield _sse(self._failed(view, body_only=True))
                    yield "data: [DONE]\n\n"
                    return
                yield f": loading {model_id} ({time.time() - queued_at:.0f} s)\n\n"
            gen = getattr(self._handle(model_id), method).remote(parsed)
            async for item in gen:
                head = item[0] if isinstance(item, list) and item else item
                if _is_error(head):
                    yield _sse({"error": head.error.model_dump()})
                    yield "data: [DONE]\n\n"
                    return
                yield _join(item)
        finally:
            release()

    # --- error answers -------------------------------------------------------------------
    @staticmethod
    def _not_available(model_id: str, outcome: str) -> JSONResponse:
        if outcome == "not_served":
            return error(404, f"model {model_id!r} is in the registry but not served (serve: false)",
                         "invalid_request_error", "model_not_served")
        return error(404, f"model {model_id!r} does not exist", "invalid_request_error", "model_not_found")

    @staticmethod
    def _failed(view: dict, body_only: bool = False):
        if view["state"] == "failed":
            message = f"model {view['id']!r} failed to load: {view['last_error']}"
            retry = view.get("retry_in_s") or 1
            code = "model_load_failed"
        else:  # refused before loading, e.g. not enough memory
            message = f"model {view['id']!r} could not be loaded: {view['last_error'] or 'unknown reason'}"
            retry, code = 5, "model_unavailable"
        if body_only:
            return {"error": {"message": message, "type": "server_error", "code": code, "param": None}}
        return error(503, message, "server_error", code, headers={"Retry-After": str(math.ceil(retry))})

    @staticmethod
    def _downloading(view: dict) -> JSONResponse:
        """503 for a model whose weights are not downloaded yet (download time is not load time)."""
        download = view.get("download") or {}
        if view["state"] == "downloading":
            done = f" ({download['percent']:.0f}% done)" if download.get("percent") is not None else ""
            message = f"model {view['id']!r} is downloading{done}; retry when it completes"
            retry, code = download.get("eta_s") or 30, "model_downloading"
        else:
            why = f" (last download {download['state']}: {download.get('error')})" if download else ""
            message = (f"model {view['id']!r} is not downloaded{why}: start its download in the "
                       "management API or admin UI")
            retry, code = 60, "model_not_downloaded"
        return error(503, message, "server_error", code, headers={"Retry-After": str(max(1, math.ceil(retry)))},
                     download=download or None)

    def _not_ready(self, view: dict) -> JSONResponse:
        if view["state"] != "loading":
            return self._failed(view)
        loading = view["loading"]
        remaining = (loading["expected_s"] or 30) - loading["elapsed_s"]
        return error(503, f"model {view['id']!r} is loading; retry shortly", "server_error", "model_loading",
                     headers={"Retry-After": str(max(1, math.ceil(remaining)))}, loading=loading)


def build(config: RouterConfig):
    """The router application."""
    return Router.bind(config)
