"""Stand-ins for what the router talks to, so its request path is tested in-process and fast:
the model manager (the real ModelManager over FakeServe, behind an actor-handle-like wrapper),
model replicas (HTTP servers answering as vLLM's OpenAI app does) and Serve's replica context.

The real router on real Serve and vLLM is exercised by tests/serving/test_serving.py and
tests/chaos; here its own decisions are under test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from types import SimpleNamespace

import uvicorn

from app.serving import router as router_mod

CHAT = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
        "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
        "total_tokens": 2}}


class Remote:
    """``handle.method.remote(*args)`` on an in-process object: a task (fire-and-forget calls still run)."""

    def __init__(self, target, down: bool = False) -> None:
        self._target, self.down = target, down

    def __getattr__(self, name: str):
        method = getattr(self._target, name)

        def remote(*args):
            if self.down:
                raise ConnectionError("ActorUnavailableError: The actor 6099311916ced9bc19033bb901000000 is unavailable")
            return asyncio.ensure_future(method(*args))

        return SimpleNamespace(remote=remote)


class Body:
    """A non-streaming answer of the replica's vLLM app (JSON, 200)."""

    def __init__(self, data: dict) -> None:
        self.data = data


class Gen:
    """What a model replica's vLLM app answers one request with: ``items`` (a Body, or SSE pieces,
    ``delay_s`` apart). With ``error``, after ``fail_after`` items: before any, vLLM's 500 answer
    for a dead engine (``error`` is its message); after some, the connection drops (the replica died)."""

    def __init__(self, items, error: BaseException | str | None = None, fail_after: int = 0, delay_s: float = 0.0):
        self.items, self.error, self.fail_after, self.delay_s = list(items), error, fail_after, delay_s
        self.sent, self.cancelled = 0, False

    def fresh(self) -> "Gen":
        return Gen(self.items, self.error, self.fail_after, self.delay_s)

    async def answer(self, receive, send) -> None:
        if self.error is not None and self.fail_after == 0:
            body = json.dumps({"error": {"message": str(self.error), "type": "InternalServerError", "param": None,
                                         "code": 500}}).encode()
            await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        gone = asyncio.ensure_future(_disconnect(receive))  # vLLM aborts a request whose client left
        gone.add_done_callback(lambda watch: watch.cancelled() or setattr(self, "cancelled", True))
        try:
            if self.items and isinstance(self.items[0], Body):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.sent = 1
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": json.dumps(self.items[0].data).encode()})
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for item in self.items:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.cancelled:
                    return
                if self.error is not None and self.sent >= self.fail_after:
                    raise ConnectionAbortedError("the fake replica dies mid-stream")  # uvicorn drops the connection
                self.sent += 1
                await send({"type": "http.response.body", "body": item.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Replica:
    """A model replica's vLLM app: each request takes the next planned Gen (the last one repeats)."""

    def __init__(self, *gens: Gen) -> None:
        self.gens, self.calls = list(gens), 0
        self.headers: dict[bytes, bytes] = {}

    def next(self) -> Gen:
        self.calls += 1
        if len(self.gens) > 1:
            self.last = self.gens.pop(0)
        else:
            self.last = self.gens[0] if self.calls == 1 else self.gens[0].fresh()
        return self.last


class ReplicaServer:
    """Every fake replica behind one real HTTP server (uvicorn on a free loopback port, in a thread
    with its own event loop): the router reaches it over TCP, as it reaches vLLM's app. A request
    goes to ``replicas[<its model>]``, looked up when it arrives (tests swap replicas)."""

    def __init__(self, replicas: dict) -> None:
        self.replicas = replicas
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", interface="asgi3"))
        self.server.install_signal_handlers = lambda: None
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    async def app(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        replica = self.replicas[json.loads(body)["model"]]
        replica.headers = dict(scope["headers"])
        replica.body = body
        await replica.next().answer(receive, send)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


class _Everywhere(dict):
    """Every model's replica is at ``address`` (the ReplicaServer)."""

    def __init__(self, address) -> None:
        super().__init__()
        self.address = address

    def get(self, key, default=None):
        return self.address

    def __getitem__(self, key):
        return self.address

    def __setitem__(self, key, value) -> None:
        pass  # the ports the manager's fakes report (9) are not where the fake replicas are

    def __contains__(self, key) -> bool:
        return True

    def pop(self, key, *default):
        return self.address


def stream_items(n: int = 3) -> list[str]:
    return [f'data: {{"choices": [{{"delta": {{"content": "t{i}"}}}}]}}\n\n' for i in range(n)] + ["data: [DONE]\n\n"]


SECRET = "s" * 64
SERVERS: list[ReplicaServer] = []


def make_router(monkeypatch, manager, replicas: dict, keys: tuple[str, ...] = (), load_wait_s: float = 5.0,
                **config):
    """A Router instance (no Serve replica around it) over ``manager`` and fake model replicas (a
    ReplicaServer, closed at the end of the test); ``config``: further RouterConfig fields."""
    cls = router_mod.Router.func_or_class
    router = cls.__new__(cls)
    router.config = router_mod.RouterConfig(**{"api_key_hashes": keys, "load_wait_s": load_wait_s,
                                               "heartbeat_s": 0.05, **config})
    router.manager = Remote(manager)
    router._setup(router.config)
    router._secret, router.id = SECRET, "rid-test"
    server = ReplicaServer(replicas)
    monkeypatch.setattr(router, "_endpoints", _Everywhere(server.address))
    SERVERS.append(server)  # closed after the test (tests/serving/conftest.py)
    router_mod.configure(router.config, router_mod.api)
    monkeypatch.setattr("ray.serve.get_replica_context", lambda: SimpleNamespace(servable_object=router))
    return router

