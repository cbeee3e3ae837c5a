"""The manager's side of the routers' fast path (app/serving/leases.py): who the routers are,
what they have in flight, and lease revocations.

Routers are found in Serve's snapshot (every application with a ``Router`` deployment), so a
restarted manager knows them again without their help. Each answer names the router replica that
gave it; counts are kept per replica, so when a replica dies (it no longer appears in Serve's
snapshot) its counts are dropped instead of pinning its models forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.engines.serve_apps import AppInfo
from app.lifecycle.runtime import DIRECT, Runtime

log = logging.getLogger("llmbox.manager")

ROUTER_DEPLOYMENT = "Router"  # the router's Serve deployment name (app/serving/router.py)
USAGE, REVOKE, MODELS_CHANGED = "usage", "revoke", "models_changed"  # the router methods the manager calls
TIMEOUT_S = 5.0  # a router that does not answer in time is taken to be busy (and asked again later)


@dataclass
class Answers:
    by_router: dict[str, dict[str, Any]] = field(default_factory=dict)  # router replica id -> answer
    silent: list[str] = field(default_factory=list)  # router apps that did not answer


Call = Callable[..., Awaitable[dict[str, Any]]]


class RouterLink:
    """Calls on every router; the call itself is injectable (tests reach ``Leases`` in-process)."""

    def __init__(self, call: Call | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.apps: set[str] = set()
        self.timeout_s = timeout_s
        self._call = call or self._serve_call
        self._handles: dict[str, Any] = {}

    def attach(self, app: str) -> None:
        self.apps.add(app)

    def discover(self, snapshot: dict[str, AppInfo]) -> set[str]:
        """Take the routers from Serve's snapshot; returns the ids of the router replicas alive now."""
        self.apps = {name for name, app in snapshot.items() if ROUTER_DEPLOYMENT in app.deployments}
        for gone in set(self._handles) - self.apps:
            del self._handles[gone]
        return {r.replica_id for name in self.apps for r in snapshot[name].replicas(ROUTER_DEPLOYMENT)}

    async def ask(self, method: str, *args: Any) -> Answers:
        """Call ``method`` on every router."""
        answers = Answers()
        for app in sorted(self.apps):
            try:
                answer = await asyncio.wait_for(self._call(app, method, *args), self.timeout_s)
                answers.by_router[answer["router"]] = answer
            except Exception as exc:  # noqa: BLE001 - a router may be gone or restarting
                log.warning("router %s did not answer %s: %s", app, method, exc)
                answers.silent.append(app)
        return answers

    async def _serve_call(self, app: str, method: str, *args: Any) -> dict[str, Any]:
        from ray import serve

        if app not in self._handles:  # once per router: status and the reaper ask often
            self._handles[app] = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name=app)
        return await getattr(self._handles[app], method).remote(*args)

    async def publish(self, views: list[dict[str, Any]]) -> None:
        """Give every router the models' views (they answer /v1/models from them)."""
        if self.apps:
            await self.ask(MODELS_CHANGED, views)

    # --- the counts, per model -------------------------------------------------------------
    async def read_usage(self, models: Mapping[str, Runtime]) -> None:
        """Take the routers' fast-path counts: requests in flight and last use per model."""
        if not self.apps:
            return
        for router, answer in (await self.ask(USAGE)).by_router.items():
            for model_id, rt in models.items():
                usage = answer["models"].get(model_id) or {"in_flight": 0, "last_used": None}
                take_usage(rt, router, usage["in_flight"], usage["last_used"])

    async def revoke(self, rt: Runtime, number: int) -> bool:
        """Close the fast path to this model up to lease ``number`` and take the routers' counts
        (just before an unload). False when a router did not answer: it may still hold the lease."""
        if not self.apps:
            return True
        answers = await self.ask(REVOKE, rt.entry.id, number)
        for router, answer in answers.by_router.items():
            take_usage(rt, router, answer["in_flight"], answer["last_used"])
        return not answers.silent

    @staticmethod
    def forget_dead(models: Iterable[Runtime], live: set[str], mark: int) -> None:
        """Drop what router replicas that are gone had counted in: they will never release it.

        ``mark``: the first ticket issued after the snapshot that ``live`` comes from was taken
        (a router replica that started since may not be in it yet).
        """
        for rt in models:
            rt.tickets = {t: r for t, r in rt.tickets.items() if r == DIRECT or r in live or t >= mark}
            rt.router_in_flight = {r: n for r, n in rt.router_in_flight.items() if r in live}


def take_usage(rt: Runtime, router: str, in_flight: int, last_used: float | None) -> None:
    if in_flight:
        rt.router_in_flight[router] = in_flight
    else:
        rt.router_in_flight.pop(router, None)
    if last_used and last_used > (rt.last_used or 0):
        rt.last_used = last_used
