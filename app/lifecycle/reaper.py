"""The idle reaper's rule: which models have been idle past their timeout (pure).

The loop that applies it is the manager's ``reap_once``, run every ``reaper_interval_s`` by
``loops.every`` (which survives errors).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.lifecycle.runtime import Runtime
from app.lifecycle.states import State


def idle(rt: Runtime, now: float, routers_too: bool = True) -> bool:
    """Reapable: ready, not pinned, nothing in flight, unused for longer than its idle timeout.

    ``routers_too=False`` leaves out the routers' fast-path counts, which may be stale: the
    reaper first looks by the manager's own numbers, then reads the routers' for candidates only.
    """
    in_flight = len(rt.tickets) + (sum(rt.router_in_flight.values()) if routers_too else 0)
    return (rt.state == State.READY and not rt.entry.always_on and in_flight == 0
            and rt.idle_timeout_s > 0 and rt.idle_for(now) > rt.idle_timeout_s)


def candidates(models: Iterable[Runtime], now: float) -> list[Runtime]:
    """Models idle by the manager's own numbers (their routers' counts still to be checked)."""
    return [rt for rt in models if idle(rt, now, routers_too=False)]
