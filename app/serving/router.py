"""The router: the Ray Serve ingress on :8000 that speaks the OpenAI API for every model.

It resolves models from the model manager's live state (so new models appear without a
redeploy), asks the manager to load a model on demand, keeps clients informed while it loads or
restarts (SSE heartbeats when streaming, 503 + Retry-After otherwise), and forwards to the
model's replica. Every error leaves in the OpenAI shape (app/serving/answers.py).

The data path is a byte proxy (bench/overhead): each model replica serves vLLM's own OpenAI app
on a port of its own (app/engines/model_server.py), and the router reads only what it needs from
a request (``model``, ``stream``, the sizes it caps), then forwards the body as it came and the
answer as it comes (app/serving/relay.py, app/serving/proxy.py). vLLM validates the request.
Three more things keep the hot path short: the router's replica listens on :8000 itself
(app/web/listener.py); a model the manager reported ready is served under a lease
(app/serving/leases.py), so requests skip the manager; and ``/v1/models`` answers from the
snapshot the manager pushes to routers on every change.
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
from ray import serve
from starlette.exceptions import HTTPException

from app.cluster.nodes import HEAD_RESOURCE, NODE_SHARE
from app.lifecycle import actor
from app.lifecycle.routers import ROUTER_DEPLOYMENT
from app.lifecycle.states import Outcome
from app.openai_errors import HTTP_CODES
from app.serving import answers, embed_prefixes, metrics
from app.serving.answers import DONE, error
from app.serving.keys import KeyFile, RequireKey
from app.serving.leases import Leases
from app.serving.proxy import Upstream, UpstreamError
from app.serving.relay import Call, Relay, after_heartbeats
from app.serving.streaming import EngineStream
from app.web import shared_secret
from app.web.hosts import AllowedHosts
from app.web.limits import BodyLimit, InFlightLimit, JsonOnly
from app.web.listener import listen

log = logging.getLogger("llmbox.router")
MAX_BODY_BYTES = 8 * 1024 * 1024
# The sampling fields whose size :8000 caps (RouterConfig.max_n, max_tokens).
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The POST routes of vLLM's OpenAI app that name a model in their body: each is forwarded to that
# model's replica as it is (vLLM answers 404 for a route the model's task has not, e.g. chat on
# an embedding model). Anthropic's Messages API included; see docs/design.md.
MODEL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
                "/v1/messages/count_tokens", "/tokenize", "/detokenize", "/v1/score", "/score", "/v1/rerank",
                "/rerank", "/v2/rerank", "/pooling", "/classify")
# /v1/models answers from the snapshot the manager pushes on every state change while every model is
# in one of these states (nothing moves without a state change then) and for at most this long.
SETTLED = frozenset({"ready", "unloaded", "failed"})
GONE = frozenset({"unloaded", "failed", "restarting"})  # states in which a model's replica no longer serves
SNAPSHOT_TTL_S = 2.0


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
    ray_token_path: str | None = None  # the replica secret is derived from it (app/web/shared_secret.py)


def _once(action):
    """``action`` wrapped so that only its first call does anything (a request ends once)."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


class ModelRoutes:
    """The hot path without the framework: a POST to one of MODEL_ROUTES goes from the guards to
    the router's ``forward`` directly (no route matching over every route, no dependency solving,
    no Request object, two send wrappers fewer per streamed piece); everything else goes on to
    FastAPI. The innermost middleware, so every guard has run."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in _MODEL_ROUTES:
            return await self.app(scope, receive, send)
        pieces, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            pieces.append(message.get("body", b""))
            more = message.get("more_body", False)
        router = serve.get_replica_context().servable_object
        response = await router.forward(scope, pieces[0] if len(pieces) == 1 else b"".join(pieces))
        await response(scope, receive, send)


_MODEL_ROUTES = frozenset(MODEL_ROUTES)

# Outermost last: a request must name this box (rebinding), be JSON (no cross-site form can), carry a
# key with the route's scope, find a free slot and stay under the size limit, before any handler runs.
api.add_middleware(ModelRoutes)
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
api.add_middleware(InFlightLimit, limit=lambda scope: scope["app"].state.max_in_flight,
                   open_paths=frozenset({"/health"}))
api.add_middleware(RequireKey)
api.add_middleware(JsonOnly)
api.add_middleware(AllowedHosts, names=lambda scope: scope["app"].state.allowed_hosts)
configure(RouterConfig(), api)


# Everything the class uses is defined above it: Serve pickles the class when it is decorated.
@serve.deployment(name=ROUTER_DEPLOYMENT, num_replicas=1, max_ongoing_requests=1000,
                  # On the head: it listens on the head's :8000 (and the manager is there).
                  ray_actor_options={"num_cpus": 0, "resources": {HEAD_RESOURCE: NODE_SHARE}})
@serve.ingress(api)
class Router:
    async def __init__(self, config: RouterConfig) -> None:
        self.config = config
        configure(config, api)
        self.manager = actor.handle()  # here, not on the first request: the lookup blocks
        self._setup(config)
        # Connections beyond the request cap are idle keep-alives mostly: allow 4x, then 503.
        self._server = await listen(api, config.host, config.port, max_connections=4 * config.max_in_flight)
        context = serve.get_replica_context()
        self.id = context.replica_id.unique_id  # the manager counts this replica's requests under it
        await self.manager.attach_router.remote(context.app_name, context.deployment)

    def _setup(self, config: RouterConfig) -> None:
        """The state of a router (tests build one without Serve around it)."""
        self._secret = shared_secret.replica_secret(config.ray_token_path) if config.ray_token_path else ""
        self._waits: dict[str, asyncio.Future] = {}  # the one manager.wait per model that waiters share
        self.leases = Leases()
        self._prefixes: dict[str, dict[str, str] | None] = {}  # embedding task prefixes per model, from its view
        self._endpoints: dict[str, tuple[str, int]] = {}  # where each ready model's replica serves
        self._upstreams: dict[tuple[str, int], Upstream] = {}  # pooled connections, per replica endpoint
        self._snapshot: list[dict] | None = None  # every model's view, as the manager last pushed it
        self._snapshot_at = 0.0

    def check_health(self) -> None:
        """Serve calls this periodically: a router whose HTTP server has stopped gets replaced."""
        if self._server.serving.done():
            raise RuntimeError(f"the router's HTTP server on {self.config.host}:{self.config.port} has stopped")

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: stop accepting, finish what is in flight."""
        if getattr(self, "_server", None) is not None:
            self._server.should_exit = True

    # --- what the manager calls --------------------------------------------------------------
    async def usage(self) -> dict[str, Any]:
        """Fast-path requests in flight and last use, per model (the manager merges them)."""
        return {"router": self.id, "models": self.leases.usage()}

    async def revoke(self, model_id: str, number: int) -> dict[str, Any]:
        """Close the fast path for a model the manager is about to unload; returns its usage."""
        return {"router": self.id, **self.leases.revoke(model_id, number)}

    async def models_changed(self, views: list[dict]) -> dict[str, Any]:
        """The manager's views of every model after a change (what /v1/models answers from)."""
        self._take_snapshot(views)
        return {"router": self.id}

    # --- plumbing ------------------------------------------------------------------------
    def _take_snapshot(self, views: list[dict]) -> None:
        self._snapshot, self._snapshot_at = views, time.monotonic()
        for view in views:
            self._learn(view)

    def _learn(self, view: dict) -> None:
        """What forwarding to a model needs from its view: its replica's port, its prefixes."""
        model_id = view["id"]
        self._prefixes[model_id] = view.get("embed_prefixes")
        endpoint = view.get("endpoint")
        if view.get("state") in GONE and model_id in self._endpoints:
            # Its replica is gone (its node was lost, its engine crashed, it was unloaded): end the
            # requests still waiting on it now, with an error, rather than at their deadline.
            upstream = self._upstreams.pop(self._endpoints.pop(model_id), None)
            if upstream is not None:
                upstream.close(abort=True)
        elif endpoint:
            address, before = (endpoint["host"], endpoint["port"]), self._endpoints.get(model_id)
            if before is not None and before != address and before in self._upstreams:
                self._upstreams.pop(before).close()  # a new replica (a reload): the old one's port is gone
            self._endpoints[model_id] = address

    def _upstream(self, model_id: str) -> Upstream:
        """The pool to a ready model's replica (its port came with the "ready" answer or a snapshot)."""
        address = self._endpoints[model_id]
        upstream = self._upstreams.get(address)
        if upstream is None:
            upstream = self._upstreams[address] = Upstream(*address, self._secret)
        return upstream

    async def _ask(self, method: str, *args: Any) -> dict[str, Any] | JSONResponse:
        """Call the manager; a 503 answer when it does not answer (Ray restarts it by itself)."""
        try:
            return await getattr(self.manager, method).remote(*args)
        except Exception as exc:  # noqa: BLE001 - RayActorError, ActorUnavailableError, ...
            return answers.manager_unavailable(exc)

    async def _models(self) -> list[dict] | JSONResponse:
        """Every model's view: the pushed snapshot while it is the truth, else the manager's answer.

        It is the truth while every model is settled (SETTLED: the manager pushes each state
        change) and younger than SNAPSHOT_TTL_S. A model that loads, downloads or unloads changes
        without a state change (its GPUs, its progress), so then the manager is asked."""
        snapshot = self._snapshot
        if (snapshot is not None and time.monotonic() - self._snapshot_at < SNAPSHOT_TTL_S
                and all(m["state"] in SETTLED for m in snapshot)):
            return snapshot
        status = await self._ask("status")
        if isinstance(status, JSONResponse):
            return status
        self._take_snapshot(status["models"])
        return self._snapshot

    def _body(self, raw: bytes, scope) -> dict | JSONResponse:
        """The request's JSON object, once it names a model this caller's key may use."""
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
        key = scope.get("state", {}).get("key")
        if key is not None and not key.may_use(body["model"]):
            return answers.model_not_allowed(key.name, body["model"])
        return body

    def _check_sizes(self, body: dict) -> JSONResponse | None:
        """What :8000 refuses before forwarding (vLLM checks the rest): a non-boolean ``stream``
        (the string "false" would mean a stream), and ``n`` / token counts beyond the box's caps."""
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            return error(400, f"'stream' must be true or false, not {body['stream']!r}", "invalid_request_error",
                         "invalid_request", param="stream")
        for field, cap, setting, what in (("n", self.config.max_n, "LLMBOX_MAX_N", "choices"),
                                          *((f, self.config.max_tokens, "LLMBOX_MAX_TOKENS_LIMIT", "tokens")
                                            for f in TOKEN_FIELDS)):
            value = body.get(field)
            if value is None:
                continue
            if not _is_count(value):
                return error(400, f"'{field}' must be an integer, not {value!r}", "invalid_request_error",
                             "invalid_request", param=field)
            if value > cap:
                return error(400, f"'{field}' is {value}; this box answers with at most {cap} {what} per "
                             f"request ({setting})", "invalid_request_error", "invalid_request", param=field)
        return None

    # --- OpenAI endpoints ----------------------------------------------------------------
    @api.get("/health")
    async def health(self) -> dict:
        """Liveness of the router (no auth)."""
        return {"status": "ok"}

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        """Every served model with its state (unloaded / loading / ready / restarting / failed)."""
        models = await self._models()
        if isinstance(models, JSONResponse):
            return models
        key = request.scope.get("state", {}).get("key")
        return {"object": "list", "data": [self._model_card(m) for m in models
                                           if m["serve"] and (key is None or key.may_use(m["id"]))]}

    @api.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request):
        """One served model."""
        models = await self._models()
        if isinstance(models, JSONResponse):
            return models
        key = request.scope.get("state", {}).get("key")
        for m in models:
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
        body = self._body(await request.body(), request.scope)
        if isinstance(body, JSONResponse):
            return body
        result = await self._ask(action, body["model"])
        if isinstance(result, JSONResponse):
            return result
        if result["outcome"] != Outcome.OK:
            return answers.refusal(result["outcome"], body["model"], result.get("model"))
        return {"success": True, "model": result["model"]["id"], "state": result["model"]["state"]}

    # --- the request path ----------------------------------------------------------------
    async def serve_model_route(self, request: Request):
        """A POST to one of vLLM's routes (MODEL_ROUTES). ModelRoutes answers these before FastAPI
        routes them; this route is there for the framework's view of the API (405 for a GET)."""
        return await self.forward(request.scope, await request.body())

    async def forward(self, scope, raw: bytes):
        """The response to a POST of ``raw`` to one of MODEL_ROUTES: forwarded to the model named in it.
        ``raw`` is at most MAX_BODY_BYTES: BodyLimit has refused larger ones unread."""
        body = self._body(raw, scope)
        if isinstance(body, JSONResponse):
            return body
        if (refused := self._check_sizes(body)) is not None:
            return refused
        model_id = body["model"]
        path = scope["path"]
        if path == "/v1/embeddings":
            if why := embed_prefixes.bad_input_type(body):
                return error(400, why, "invalid_request_error", "invalid_request")
            if (changed := embed_prefixes.with_prefix(body, self._prefixes.get(model_id))) is not None:
                raw = json.dumps(changed).encode()
        query = scope.get("query_string")
        call = Call(path.encode() + (b"?" + query if query else b""), scope["headers"], raw, model_id,
                    body.get("stream") is True, asyncio.get_running_loop().time() + self.config.request_timeout_s)
        if self.leases.begin(model_id):  # the fast path: no round trip to the manager
            return self._relay(call, _once(lambda: self.leases.end(model_id)), retry=True)
        return await self._slow_path(call, retry=True)

    for _path in MODEL_ROUTES:  # one handler for all of them: the body names the model
        api.post(_path, include_in_schema=False)(serve_model_route)
    del _path

    def _relay(self, call: Call, done, retry: bool):
        """The response that forwards ``call`` to its model's replica. If the replica cannot be
        reached (its engine may just have died), the lease is dropped, the manager is asked to look
        at the model now, and the request takes the slow path once: a restarting model then gets
        the loading contract rather than an error."""
        upstream = self._upstream(call.model_id)

        async def failed_early(exc: UpstreamError):
            self.leases.drop(call.model_id)
            log.warning("request to %s failed before any answer (%s): asking the manager", call.model_id, exc)
            await self._ask("check", call.model_id)
            return await self._slow_path(call, retry=False)

        return Relay(upstream, call, self.config.request_timeout_s, done, failed_early if retry else None,
                     lambda: self._error_seen(call.model_id))

    def _error_seen(self, model_id: str) -> None:
        """The replica answered with a server error: its engine may be dead. The manager looks at
        the model now, and the next request asks it."""
        self.leases.drop(model_id)
        self.manager.check.remote(model_id)

    async def _wait(self, model_id: str, timeout_s: float | None, queued_at: float):
        """The manager's answer once the model is no longer pending, or after about a heartbeat
        (None if this caller's ``timeout_s`` ran out first). All requests waiting for one model
        share one manager call of at most a heartbeat: a burst to a loading model must not take up
        the manager's call slots, which every other request's acquire and the API's status need.
        Each request reports its own queue wait once the model is ready (fire and forget)."""
        got = await self._shared_wait(model_id, timeout_s)
        if isinstance(got, dict) and got["outcome"] == Outcome.READY:
            self._learn(got["model"])
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

    async def _slow_path(self, call: Call, retry: bool):
        """Through the manager: count the request in, load the model if needed, wait, forward."""
        model_id = call.model_id
        queued_at = time.time()
        got = await self._ask("acquire", model_id, self.id)
        if isinstance(got, JSONResponse):
            return got
        if got["outcome"] not in (Outcome.READY, Outcome.PENDING):
            return answers.refusal(got["outcome"], model_id, got.get("model"))
        self._learn(got["model"])  # kept for the fast path (a change reloads the model, which revokes the lease)
        # Fire and forget: the reply does not depend on it, and calls from one caller reach the
        # actor in order, so it is never counted out before it was counted in.
        ticket = got["ticket"]
        release = _once(lambda: self.manager.release.remote(model_id, ticket))
        try:
            if got["outcome"] == Outcome.READY:
                self.leases.grant(model_id, got["lease"])
                return self._relay(call, release, retry)
            if call.streaming:
                return EngineStream(self._stream_while_loading(call, queued_at), release)
            got = await self._wait_until(model_id, queued_at + self.config.load_wait_s, queued_at)
            if isinstance(got, JSONResponse):
                release()
                return got
            if got["outcome"] == Outcome.READY:
                self.leases.grant(model_id, got["lease"])
                return self._relay(call, release, retry)
            release()
            return answers.refusal(got["outcome"], model_id, got.get("model"))
        except BaseException:
            release()
            raise

    async def _stream_while_loading(self, call: Call, queued_at: float):
        """SSE: comment heartbeats while the model loads (or restarts), then the model's own stream."""
        model_id = call.model_id
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= call.deadline:
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
        async for piece in after_heartbeats(self._upstream(model_id), call, self.config.request_timeout_s,
                                            lambda: self._error_seen(model_id)):
            yield piece


def build(config: RouterConfig):
    """The router application."""
    return Router.bind(config)
