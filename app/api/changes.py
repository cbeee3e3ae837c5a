"""One path for every registry write made through the API.

A write: run it off the event loop (atomic, locked, versioned; a stale base revision -> 409),
record who did it in the event log, start the downloads that newly served Hugging Face models
need (through the registry watch, which starts them for writes made elsewhere too), and apply
the new registry to the serving plane (reconcile: unchanged models are not touched). Applying is
best effort: when the serving plane is down the edit stands and is applied at the next start.
Before a model write the routes refuse what this host would not serve (``allowed_here``); the
engine config builder refuses it again at every load (app/engines/host_rules.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from app.api.errors import ApiError
from app.api.registry_watch import RegistryWatch
from app.api.serving_client import ServingClient
from app.api.tokens import Principal
from app.engines import host_rules
from app.events import EventLog
from app.registry.schema import ModelEntry, Registry
from app.settings import Settings


def allowed_here(settings: Settings, entry: ModelEntry, changed: Iterable[str] | None = None) -> None:
    """Refuse (400, nothing written) what this host would not serve: trust_remote_code without
    LLMBOX_ALLOW_REMOTE_CODE, an absolute source outside the models folder and LLMBOX_MODEL_ROOTS.
    ``changed``: the fields an edit sets (only their rules apply, so an entry written before the host
    refused it can still be turned off); None for a new entry."""
    fields = None if changed is None else set(changed)
    for field, rule in (("engine", host_rules.remote_code_refusal), ("source", host_rules.source_refusal)):
        if (fields is None or field in fields) and (reason := rule(entry, settings)):
            raise ApiError(400, "not_allowed_on_host", reason)


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
