"""One path for every registry write made through the API.

A write: run it off the event loop (atomic, locked, versioned; a stale base revision -> 409),
record who did it in the event log, start the downloads that newly served Hugging Face models
need (through the registry watch, which starts them for writes made elsewhere too), and apply
the new registry to the serving plane (reconcile: unchanged models are not touched). Applying is
best effort: when the serving plane is down the edit stands and is applied at the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from app.api.errors import ApiError
from app.api.registry_watch import RegistryWatch
from app.api.serving_client import ServingClient
from app.api.tokens import Principal
from app.events import EventLog
from app.registry.schema import Registry


async def commit(serving: ServingClient, watch: RegistryWatch, events: EventLog, who: Principal,
                 write: Callable[[], Registry], action: str, model: str | None = None) -> dict[str, Any]:
    """Run ``write`` (a store write, e.g. ``partial(store.edit, base, change)``) and make it take effect."""
    registry = await asyncio.to_thread(write)
    events.record("registry_edited", who=who.name, action=action, model=model, revision=registry.revision)
    started = await watch.downloads_for(registry, who)
    return {"revision": registry.revision, "applied": await apply(serving), "downloads": started}


async def apply(serving: ServingClient) -> dict[str, Any]:
    """Reconcile the serving plane with the registry; says so plainly when it is not running."""
    try:
        return {"ok": True, **await serving.call("reconcile", timeout_s=120)}
    except ApiError as exc:
        return {"ok": False, "reason": exc.message}
