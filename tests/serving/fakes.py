"""Stand-ins for what the router talks to, so its request path is tested in-process and fast:
the model manager (the real ModelManager over FakeServe, behind an actor-handle-like wrapper),
model replicas (a Serve deployment handle's streaming calls) and Serve's replica context.

The real router on real Serve and vLLM is exercised by tests/serving/test_serving.py and
tests/chaos; here its own decisions are under test.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.serving import router as router_mod
from app.serving.leases import Leases

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
    """A non-streaming answer item, as LLMServer yields it (a pydantic model)."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def model_dump(self, exclude_none: bool = False) -> dict:
        return self.data


class Gen:
    """A Serve streaming response: yields ``items``; raises ``error`` after ``fail_after`` items."""

    def __init__(self, items, error: BaseException | None = None, fail_after: int = 0, delay_s: float = 0.0):
        self.items, self.error, self.fail_after, self.delay_s = list(items), error, fail_after, delay_s
        self.sent, self.cancelled = 0, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None and self.sent >= self.fail_after:
            raise self.error
        if self.sent >= len(self.items):
            raise StopAsyncIteration
        self.sent += 1
        return self.items[self.sent - 1]

    def cancel(self) -> None:
        self.cancelled = True

    def fresh(self) -> "Gen":
        return Gen(self.items, self.error, self.fail_after, self.delay_s)


class Replica:
    """A model app's deployment handle: each call takes the next planned Gen."""

    def __init__(self, *gens: Gen) -> None:
        self.gens, self.calls = list(gens), 0

    def __getattr__(self, method: str):
        def remote(parsed):
            self.calls += 1
            if len(self.gens) > 1:
                return self.gens.pop(0)
            self.last = self.gens[0] if self.calls == 1 else self.gens[0].fresh()  # the last plan repeats
            return self.last

        return SimpleNamespace(remote=remote)


def stream_items(n: int = 3) -> list[str]:
    return [f'data: {{"choices": [{{"delta": {{"content": "t{i}"}}}}]}}\n\n' for i in range(n)] + ["data: [DONE]\n\n"]


def make_router(monkeypatch, manager, replicas: dict, keys: tuple[str, ...] = (), load_wait_s: float = 5.0,
                **config):
    """A Router instance (no Serve replica around it) over ``manager`` and fake model replicas;
    ``config``: further RouterConfig fields."""
    cls = router_mod.Router.func_or_class
    router = cls.__new__(cls)
    router.config = router_mod.RouterConfig(**{"api_key_hashes": keys, "load_wait_s": load_wait_s,
                                               "heartbeat_s": 0.05, **config})
    router.manager = Remote(manager)
    router.leases, router._handles, router._prefixes, router._waits, router.id = Leases(), {}, {}, {}, "rid-test"
    router._handle = lambda model_id: replicas[model_id]
    router_mod.configure(router.config, router_mod.api)
    monkeypatch.setattr("ray.serve.get_replica_context", lambda: SimpleNamespace(servable_object=router))
    return router
