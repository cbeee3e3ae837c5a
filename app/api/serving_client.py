"""The management API's line to the serving plane: calls on the model manager actor.

The API process joins the box's Ray cluster as a driver the first time it needs to (the API may
start before Ray, or outlive a restart of it). When the serving plane is not running, calls
raise ``ApiError(503, "serving_unavailable")``: registry edits still work, and are applied on the
next reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.api.errors import ApiError
from app.settings import Settings

log = logging.getLogger("llmbox.api.serving")
CALL_TIMEOUT_S = 30.0
DOWN_RECHECK_S = 1.0  # after finding the serving plane down, answer at once for this long


class ServingClient:
    """Async calls on the manager actor; one Ray connection per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connect_lock = asyncio.Lock()
        self._down_until = 0.0
        self._handle = None  # the manager's actor handle while connected (cleared on any failure)

    async def _manager(self):
        if self._handle is not None:
            return self._handle  # connected: no process scan, no actor lookup per request
        from app import ray_head
        from app.lifecycle import actor

        down = ApiError(503, "serving_unavailable", "the serving plane is not running: run ./start.sh")
        if time.monotonic() < self._down_until:
            raise down
        async with self._connect_lock:
            if self._handle is not None:  # another request connected while this one waited
                return self._handle
            if not await asyncio.to_thread(ray_head.is_running, self.settings):
                self._down_until = time.monotonic() + DOWN_RECHECK_S
                raise down
            try:
                await asyncio.to_thread(ray_head.connect, self.settings)
                self._handle = await asyncio.to_thread(actor.handle)
                return self._handle
            except Exception as exc:  # no head yet, head restarted, actor gone: all "not running"
                self._disconnect()
                raise ApiError(503, "serving_unavailable",
                               f"the serving plane is not reachable ({type(exc).__name__}): run ./start.sh") from None

    async def call(self, method: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Call ``method`` on the manager; 503 if the serving plane is down or does not answer."""
        manager = await self._manager()
        try:
            return await asyncio.wait_for(getattr(manager, method).remote(*args), timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, "serving_timeout", f"the model manager did not answer {method} "
                           f"within {timeout_s:.0f} s") from None
        except Exception as exc:
            log.warning("manager call %s failed: %s", method, exc)
            self._disconnect()  # the next call reconnects (the head may have been restarted)
            raise ApiError(503, "serving_unavailable", f"the model manager failed ({type(exc).__name__})") from None

    async def status_or_none(self) -> dict | None:
        """The manager's status, or None when the serving plane is down (for read views)."""
        try:
            return await self.call("status", timeout_s=5)
        except ApiError:
            return None

    def _disconnect(self) -> None:
        import ray

        self._handle = None
        if ray.is_initialized():
            ray.shutdown()
