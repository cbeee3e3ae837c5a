"""The router: the Ray Serve ingress on :8000 that speaks the OpenAI API for every model.

It resolves models from the model manager's live state (so new models appear without a
redeploy), asks the manager to load a model on demand, keeps clients informed while it loads or
restarts (SSE heartbeats when streaming, 503 + Retry-After otherwise), and forwards to the
model's own Serve application. Every error leaves in the OpenAI shape (app/serving/answers.py).

Two things keep the hot path short (bench/overhead): the replica listens on :8000 itself
(app/serving/listener.py), and a model the manager reported ready is served under a lease
(app/serving/leases.py): requests skip the manager and are counted here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingCompletionRequest,
)
from starlette.exceptions import HTTPException
from vllm.exceptions import VLLMClientError

from app.engines.llm_config import DEPLOYMENT_NAME, app_name
from app.lifecycle import actor
from app.lifecycle.routers import ROUTER_DEPLOYMENT
from app.lifecycle.states import Outcome
from app.openai_errors import HTTP_CODES, clean
from app.serving import answers, embed_prefixes, metrics
from app.serving.answers import DONE, error
from app.serving.keys import KeyFile, RequireKey
from app.serving.leases import Leases
from app.serving.listener import listen
from app.serving.streaming import EngineStream
from app.web.hosts import AllowedHosts
from app.web.limits import BodyLimit, InFlightLimit, JsonOnly

log = logging.getLogger("llmbox.router")
MAX_BODY_BYTES = 8 * 1024 * 1024
# The sampling fields whose size :8000 caps (RouterConfig.max_n, max_tokens).
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
# ray.serve.llm's own request models: the same validation the engine side applies.
REQUEST_CLASSES = {"chat": ChatCompletionRequest, "completions": CompletionRequest,
                   "embeddings": EmbeddingCompletionRequest}


@dataclass(frozen=True)
class RouterConfig:
    """Router settings; frozen plain data so a redeploy with the same values changes nothing."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key_hashes: tuple[str, ...] = ()  # sha256 of each LLMBOX_API_KEYS key: keys never leave the driver
    keys_path: str | None = None  # the hashed, scoped keys (app/serving/keys.py); None: none
    keys_required: bool = False  # beyond loopback: inference needs a key even when none exists
    allowed_hosts: frozenset[str] = frozenset()  # Host names answered besides IPs and localhost (app/web/hosts.py)
    load_wait_s: float = 30.0
    heartbeat_s: float = 2.0
    request_timeout_s: float = 900.0
    max_in_flight: int = 512
    max_n: int = 16
    max_tokens: int = 65536


def _head(item):
    return item[0] if isinstance(item, list) and item else item


def _is_error(item) -> bool:
    return type(item).__name__ == "ErrorResponse"


def _once(action):
    """``action`` wrapped so that only its first call does anything (a request ends once)."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


api = FastAPI(title="llmbox", docs_url=None, redoc_url=None)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error(400, f"invalid request: {exc.errors()}", "invalid_request_error", "invalid_request")


@api.exception_handler(HTTPException)
async def _http(_: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error(exc.status_code, str(exc.detail), "invalid_request_error", code)


def configure(config: RouterConfig, app: FastAPI) -> None:
    """Give ``app`` this router's settings, which its middleware reads from the app serving each
    request (``scope["app"]``). ``app`` is passed, not taken from this module: Serve ships the
    router class by value, with its own copy of ``api``."""
    app.state.api_key_hashes = config.api_key_hashes
    app.state.key_file = KeyFile(config.keys_path) if config.keys_path else None
    app.state.keys_required = config.keys_required
    app.state.allowed_hosts = config.allowed_hosts
    app.state.max_in_flight = config.max_in_flight


# Outermost last: a request must name this box (rebinding), be JSON (no cross-site form can), carry a
# key with the route's scope, find a free slot and stay under the size limit, before any handler runs.
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
api.add_middleware(InFlightLimit, limit=lambda scope: scope["app"].state.max_in_flight,
                   open_paths=frozenset({"/health"}))
api.add_middleware(RequireKey)
api.add_middleware(JsonOnly)
api.add_middleware(AllowedHosts, names=lambda scope: scope["app"].state.allowed_hosts)
configure(RouterConfig(), api)


# Everything the class uses is defined above it: Serve pickles the class when it is decorated.
@serve.deployment(name=ROUTER_DEPLOYMENT, num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=1000)
@serve.ingress(api)
class Router:
    async def __init__(self, config: RouterConfig) -> None:
        self.config = config
        configure(config, api)
        self.manager = actor.handle()  # here, not on the first request: the lookup blocks
        self._handles: dict[str, Any] = {}
        self._waits: dict[str, asyncio.Future] = {}  # the one manager.wait per model that waiters share
        self.leases = Leases()
        self._prefixes: dict[str, dict[str, str] | None] = {}  # embedding task prefixes per model, from its view
        # Connections beyond the request cap are idle keep-alives mostly: allow 4x, then 503.
        self._server = await listen(api, config.host, config.port, max_connections=4 * config.max_in_flight)
        context = serve.get_replica_context()
        self.id = context.replica_id.unique_id  # the manager counts this replica's requests under it
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
    async def usage(self) -> dict[str, Any]:
        """Fast-path requests in flight and last use, per model (the manager merges them)."""
        return {"router": self.id, "models": self.leases.usage()}

    async def revoke(self, model_id: str, number: int) -> dict[str, Any]:
        """Close the fast path for a model the manager is about to unload; returns its usage."""
        return {"router": self.id, **self.leases.revoke(model_id, number)}

    # --- plumbing ------------------------------------------------------------------------
    def _handle(self, model_id: str):
        if model_id not in self._handles:
            self._handles[model_id] = serve.get_deployment_handle(
                DEPLOYMENT_NAME, app_name=app_name(model_id), _check_exists=False
            ).options(stream=True)
        return self._handles[model_id]

    def _text(self, model_id: str, item) -> str:
        """A piece of the model's stream; an error event in it names the model, and makes the
        manager look at the model now (its engine may have died) and this router ask it next time."""
        text = "".join(item) if isinstance(item, list) else str(item)
        if answers.ERROR_EVENT not in text:
            return text
        self.leases.drop(model_id)
        self.manager.check.remote(model_id)
        return answers.named_errors(model_id, text)

    async def _ask(self, method: str, *args: Any) -> dict[str, Any] | JSONResponse:
        """Call the manager; a 503 answer when it does not answer (Ray restarts it by itself)."""
        try:
            return await getattr(self.manager, method).remote(*args)
        except Exception as exc:  # noqa: BLE001 - RayActorError, ActorUnavailableError, ...
            return answers.manager_unavailable(exc)

    async def _body(self, request: Request) -> dict | JSONResponse:
        raw = await request.body()  # at most MAX_BODY_BYTES: BodyLimit has refused larger ones unread
        try:
            body = json.loads(raw)
        except RecursionError:
            return error(400, "request body is nested too deeply", "invalid_request_error", "invalid_json")
        except ValueError as exc:
            return error(400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object", "invalid_request_error", "invalid_request")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return error(400, "'model' is required (a string naming a served model)", "invalid_request_error",
                         "model_required")
        key = request.scope.get("state", {}).get("key")
        if key is not None and not key.may_use(body["model"]):
            return answers.model_not_allowed(key.name, body["model"])
        return body

    def _check_sizes(self, body: dict, parsed) -> JSONResponse | None:
        """What pydantic's lax mode lets through but :8000 refuses: a non-boolean ``stream`` (the
        string "false" would mean a stream), and ``n`` / ``max_tokens`` beyond the box's caps."""
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            return error(400, f"'stream' must be true or false, not {body['stream']!r}", "invalid_request_error",
                         "invalid_request", param="stream")
        n = vars(parsed).get("n")
        if n is not None and n > self.config.max_n:
            return error(400, f"'n' is {n}; this box answers at most {self.config.max_n} choices per request "
                         "(LLMBOX_MAX_N)", "invalid_request_error", "invalid_request", param="n")
        for field in TOKEN_FIELDS:
            value = vars(parsed).get(field)  # not getattr: max_tokens warns as deprecated on chat
            if value is not None and value > self.config.max_tokens:
                return error(400, f"'{field}' is {value}; this box generates at most {self.config.max_tokens} "
                             "tokens per request (LLMBOX_MAX_TOKENS_LIMIT)", "invalid_request_error",
                             "invalid_request", param=field)
        return None

    # --- OpenAI endpoints ----------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict:
        """Liveness of the router (no auth)."""
        return {"status": "ok"}

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        """Every served model with its state (unloaded / loading / ready / restarting / failed)."""
        status = await self._ask("status")
        if isinstance(status, JSONResponse):
            return status
        key = request.scope.get("state", {}).get("key")
        return {"object": "list", "data": [self._model_card(m) for m in status["models"]
                                           if m["serve"] and (key is None or key.may_use(m["id"]))]}

    @api.get("/v1/models/{model_id}")
    async def get_model(self, model_id: str, request: Request):
        """One served model."""
        status = await self._ask("status")
        if isinstance(status, JSONResponse):
            return status
        key = request.scope.get("state", {}).get("key")
        for m in status["models"]:
            if m["id"] == model_id and m["serve"] and (key is None or key.may_use(model_id)):
                return self._model_card(m)
        return answers.not_found(model_id)

    @staticmethod
    def _model_card(m: dict) -> dict:
        card = {"id": m["id"], "object": "model", "created": int(m["since"]), "owned_by": "llmbox",
                "task": m["task"], "state": m["state"], "always_on": m["always_on"], "memory_gb": m["memory_gb"]}
        if m.get("gpus"):  # where it is placed, and what it is given on each of those GPUs
            card["gpus"], card["budget_gb"] = m["gpus"], m["budget_gb"]
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
        snapshot = await self._ask("metrics_snapshot")
        if isinstance(snapshot, JSONResponse):
            return snapshot
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
        result = await self._ask(action, body["model"])
        if isinstance(result, JSONResponse):
            return result
        if result["outcome"] != Outcome.OK:
            return answers.refusal(result["outcome"], body["model"], result.get("model"))
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
        except RecursionError:
            return error(400, "request body is nested too deeply", "invalid_request_error", "invalid_request")
        except (ValueError, TypeError, VLLMClientError) as exc:  # vLLM's own checks in the request models
            message = exc.args[0] if exc.args else str(exc)
            return error(400, f"invalid request: {clean(message)}", "invalid_request_error", "invalid_request",
                         param=getattr(exc, "parameter", None))
        if (refused := self._check_sizes(body, parsed)) is not None:
            return refused
        if method == "embeddings" and (why := embed_prefixes.bad_input_type(body)):
            return error(400, why, "invalid_request_error", "invalid_request")
        model_id = body["model"]
        streaming = bool(body.get("stream"))
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        if self.leases.begin(model_id):  # the fast path: no round trip to the manager
            end = _once(lambda: self.leases.end(model_id))
            try:
                return await self._forward(method, parsed, model_id, streaming, end, deadline, retry=True)
            except BaseException:
                end()
                raise
        return await self._slow_path(method, parsed, model_id, streaming, deadline)

    async def _wait(self, model_id: str, timeout_s: float | None, queued_at: float):
        """The manager's answer once the model is no longer pending, or after about a heartbeat
        (None if this caller's ``timeout_s`` ran out first). All requests waiting for one model
        share one manager call of at most a heartbeat: a burst to a loading model must not take up
        the manager's call slots, which every other request's acquire and the API's status need.
        Each request reports its own queue wait once the model is ready (fire and forget)."""
        got = await self._shared_wait(model_id, timeout_s)
        if isinstance(got, dict) and got["outcome"] == Outcome.READY:
            self.manager.waited.remote(model_id, time.time() - queued_at)
        return got

    async def _shared_wait(self, model_id: str, timeout_s: float | None):
        shared = self._waits.get(model_id)
        if shared is None:
            shared = asyncio.ensure_future(self._ask("wait", model_id, self.config.heartbeat_s, None))
            self._waits[model_id] = shared
            shared.add_done_callback(lambda done: self._waits.pop(model_id, None) if
                                     self._waits.get(model_id) is done else None)
        if timeout_s is None:
            return await asyncio.shield(shared)
        try:
            return await asyncio.wait_for(asyncio.shield(shared), max(0.0, timeout_s))
        except TimeoutError:
            return None

    async def _wait_until(self, model_id: str, until: float, queued_at: float):
        """``_wait`` again and again until the model is ready or final, or the clock passes ``until``."""
        while True:
            got = await self._wait(model_id, until - time.time(), queued_at)
            if isinstance(got, JSONResponse) or (got is not None and got["outcome"] != Outcome.PENDING):
                return got
            if time.time() >= until:
                return got if got is not None else await self._ask("wait", model_id, 0.0)

    async def _slow_path(self, method: str, parsed, model_id: str, streaming: bool, deadline: float,
                         retry: bool = True):
        """Through the manager: count the request in, load the model if needed, wait, forward."""
        queued_at = time.time()
        got = await self._ask("acquire", model_id, self.id)
        if isinstance(got, JSONResponse):
            return got
        if got["outcome"] not in (Outcome.READY, Outcome.PENDING):
            return answers.refusal(got["outcome"], model_id, got.get("model"))
        # Kept for the fast path (a settings change reloads the model, which revokes the lease).
        self._prefixes[model_id] = got["model"].get("embed_prefixes")
        # Fire and forget: the reply does not depend on it, and calls from one caller reach the
        # actor in order, so it is never counted out before it was counted in.
        ticket = got["ticket"]
        release = _once(lambda: self.manager.release.remote(model_id, ticket))
        try:
            if got["outcome"] == Outcome.READY:
                self.leases.grant(model_id, got["lease"])
                return await self._forward(method, parsed, model_id, streaming, release, deadline, retry)
            if streaming:
                return EngineStream(self._stream_while_loading(method, parsed, model_id, queued_at, deadline),
                                    release)
            got = await self._wait_until(model_id, queued_at + self.config.load_wait_s, queued_at)
            if isinstance(got, JSONResponse):
                release()
                return got
            if got["outcome"] == Outcome.READY:
                self.leases.grant(model_id, got["lease"])
                return await self._forward(method, parsed, model_id, False, release, deadline, retry)
            release()
            return answers.refusal(got["outcome"], model_id, got.get("model"))
        except BaseException:
            release()
            raise

    async def _forward(self, method: str, parsed, model_id: str, streaming: bool, done, deadline: float,
                       retry: bool):
        """Send the request to the model's app; the first item decides the status code.

        If the model fails before anything was sent (its engine may just have died), the lease
        is dropped, the manager is asked to look at the model now, and the request takes the slow
        path once: a restarting model then gets the loading contract rather than an error.
        """
        if method == "embeddings":
            parsed = embed_prefixes.with_prefix(parsed, self._prefixes.get(model_id))
        gen = getattr(self._handle(model_id), method).remote(parsed)
        try:
            async with asyncio.timeout_at(deadline):
                first = await gen.__anext__()
        except StopAsyncIteration:
            done()
            return error(502, f"model {model_id!r} returned nothing", "api_error", "empty_response")
        except TimeoutError:
            gen.cancel()
            done()
            return answers.deadline(model_id, self.config.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - the replica or engine failed
            done()
            self.leases.drop(model_id)
            if not retry:
                return answers.engine_error(model_id, exc)
            log.warning("request to %s failed before any output (%r): asking the manager", model_id, exc)
            await self._ask("check", model_id)
            return await self._slow_path(method, parsed, model_id, streaming, deadline, retry=False)
        head = _head(first)
        if _is_error(head):
            done()
            return answers.from_engine(model_id, head)
        if not streaming:
            done()
            return JSONResponse(head.model_dump(exclude_none=True) if hasattr(head, "model_dump") else head)
        return EngineStream(self._chunks(model_id, gen, deadline, first), done)

    async def _chunks(self, model_id: str, gen, deadline: float, first=None):
        """The model's stream (after ``first``, if already taken); an error item, a failure or the
        request's deadline ends it with an error event and ``[DONE]``; the generation is cancelled
        if the stream ends early (a client left, or the deadline passed)."""
        finished = False
        try:
            if first is not None:
                yield self._text(model_id, first)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):  # around the wait only: never around a yield
                        item = await gen.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    yield answers.deadline_event(model_id, self.config.request_timeout_s)
                    yield DONE
                    return  # not finished: the finally cancels the generation
                head = _head(item)
                if _is_error(head):
                    yield answers.from_engine_event(model_id, head)
                    yield DONE
                    finished = True
                    return
                yield self._text(model_id, item)
            finished = True
        except Exception as exc:  # noqa: BLE001 - the engine died mid-stream: say so, then end
            self.leases.drop(model_id)
            finished = True
            yield answers.engine_error_event(model_id, exc)
            yield DONE
        finally:
            if not finished:
                gen.cancel()

    async def _stream_while_loading(self, method: str, parsed, model_id: str, queued_at: float, deadline: float):
        """SSE: comment heartbeats while the model loads (or restarts), then the model's own stream."""
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= deadline:
                yield answers.deadline_event(model_id, self.config.request_timeout_s)
                yield DONE
                return
            got = await self._wait(model_id, None, queued_at)  # about a heartbeat
            if isinstance(got, JSONResponse):
                yield f"data: {got.body.decode()}\n\n"
                yield DONE
                return
            if got["outcome"] == Outcome.READY:
                self.leases.grant(model_id, got["lease"])
                break
            if got["outcome"] != Outcome.PENDING:
                yield answers.refusal_event(got["outcome"], model_id, got.get("model"))
                yield DONE
                return
            state = (got["model"].get("loading") or {}).get("state", "loading")
            yield answers.heartbeat(model_id, time.time() - queued_at, state)
        chunks = self._chunks(model_id, getattr(self._handle(model_id), method).remote(parsed), deadline)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # now, not when collected: it cancels the generation if we end early


def build(config: RouterConfig):
    """The router application."""
    return Router.bind(config)
