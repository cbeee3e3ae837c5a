"""Background loops of the manager that survive their own errors.

An exception in one tick is logged and counted (``llmbox_background_errors_total{loop}``), and
the loop goes on: before, the reaper's first error ended idle unloads for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("llmbox.manager")


async def every(interval_s: float, tick: Callable[[], Awaitable[None]], name: str,
                on_error: Callable[[str], None]) -> None:
    """Run ``tick`` every ``interval_s`` seconds, forever."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad tick must not end the loop
            log.exception("the %s loop failed; it goes on", name)
            on_error(name)
