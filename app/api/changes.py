"""One path for every registry write made through the API.

A write: edit the file (atomic, locked, versioned; a stale base revision -> 409), record who did
it in the event log, start the downloads that newly served Hugging Face models need, and apply
the new registry to the serving plane (reconcile: unchanged models are not touched). Applying is
best effort: when the serving plane is down the edit stands and is applied at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.api.errors import ApiError
from app.api.serving_client import ServingClient
from app.api.tokens import Principal
from app.engines.sources import NotDownloaded, SourceMissing, is_hub, resolve
from app.events import EventLog
from app.hub.downloads import DownloadManager
from app.registry.schema import Registry
from app.registry.store import RegistryStore

log = logging.getLogger("llmbox.api.changes")


async def commit(store: RegistryStore, serving: ServingClient, downloads: DownloadManager, events: EventLog,
                 who: Principal, base_revision: int, change: Callable, action: str,
                 model: str | None = None) -> dict[str, Any]:
    """Apply ``change`` to the registry at ``base_revision`` and make it take effect."""
    registry = await asyncio.to_thread(store.edit, base_revision, change)
    events.record("registry_edited", who=who.name, action=action, model=model, revision=registry.revision)
    started = start_missing_downloads(registry, downloads, events, who)
    return {"revision": registry.revision, "applied": await apply(serving), "downloads": started}


async def apply(serving: ServingClient) -> dict[str, Any]:
    """Reconcile the serving plane with the registry; says so plainly when it is not running."""
    try:
        return {"ok": True, **await serving.call("reconcile", timeout_s=120)}
    except ApiError as exc:
        return {"ok": False, "reason": exc.message}


def start_missing_downloads(registry: Registry, downloads: DownloadManager, events: EventLog,
                            who: Principal | None = None) -> list[dict[str, Any]]:
    """Start (or resume) the download of every served Hugging Face model whose weights are absent."""
    started = []
    for entry in registry.models:
        if not (entry.serve and is_hub(entry)):
            continue
        try:
            resolve(entry, downloads.models_dir)
            continue  # already downloaded
        except NotDownloaded:
            pass
        except SourceMissing:
            continue
        try:
            started.append(downloads.start(entry.source, entry.revision or "main"))
        except Exception as exc:  # the edit stands; the download error is reported and logged
            log.warning("could not start the download of %s: %s", entry.source, exc)
            events.record("download_failed", model=entry.id, repo=entry.source, error=str(exc),
                          who=who.name if who else None)
            started.append({"repo_id": entry.source, "state": "failed", "error": str(exc)})
    return started
