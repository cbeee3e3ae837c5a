"""Downloads follow the registry, whoever writes it: the API, Ansible's sync module, a hand edit.

The API process owns the downloads (app.hub.downloads), so it watches the registry file: every
``POLL_S`` it compares the file's stat stamp, and when that moved it reads the registry and starts
the downloads that newly served Hugging Face models need. API writes do not wait for the poll:
``changes.commit`` hands over its new registry at once and replies with what started. Both go
through one lock and remember the registry handled, so each revision's downloads are planned once,
by whichever sees it first. Planning asks the hub (blocking HTTP): always in a thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.api.tokens import Principal
from app.engines.sources import NotDownloaded, SourceMissing, is_hub, resolve
from app.events import EventLog
from app.hub.downloads import DownloadManager
from app.registry.schema import Registry
from app.registry.store import RegistryStore

log = logging.getLogger("llmbox.api.registry_watch")
POLL_S = 1.0  # a push or hand edit starts its downloads within a second; a stat a second costs nothing


class RegistryWatch:
    """Starts the downloads each new registry revision needs (one per API process)."""

    def __init__(self, store: RegistryStore, downloads: DownloadManager, events: EventLog,
                 poll_s: float = POLL_S) -> None:
        self.store, self.downloads, self.events, self.poll_s = store, downloads, events, poll_s
        self._lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None  # the file's (mtime, size, inode) last read
        self._handled: Registry | None = None  # the registry whose downloads were started
        self._started: list[dict[str, Any]] = []

    async def downloads_for(self, registry: Registry, who: Principal | None = None) -> list[dict[str, Any]]:
        """Start the downloads ``registry`` needs, once per revision; returns those started for it."""
        async with self._lock:
            if registry != self._handled:  # a new revision, or a hand edit that kept the number
                self._started = await asyncio.to_thread(
                    start_missing_downloads, registry, self.downloads, self.events, who)
                self._handled = registry
            return self._started

    async def run(self) -> None:
        """Check the file every ``poll_s`` until cancelled (the API's lifespan runs this as a task)."""
        while True:
            try:
                await self.check()
            except Exception as exc:  # a broken hand edit, say: the next write fixes it, keep watching
                log.warning("registry not readable: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def check(self) -> None:
        """Read the registry if the file changed (every write renames a new file in: a new inode)."""
        try:
            st = self.store.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None  # no registry yet: nothing to download
        if stamp == self._stamp:
            return
        self._stamp = stamp  # before reading, so a file that does not parse is reported once
        if stamp is not None:
            await self.downloads_for(await asyncio.to_thread(self.store.read))


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
