"""Unloading: idle (the reaper's tick), evicted, drained, manual and reconcile unloads.

Part of the model manager (``ModelManager`` mixes this in). Every unload first revokes the
routers' lease, so the requests that skipped the manager are counted before the decision is
final; a model with a request in flight is never reaped or evicted, only drained: new requests
wait for its reload while the ones in flight end.
"""

from __future__ import annotations

import asyncio
import logging

from app.lifecycle import reaper
from app.lifecycle.runtime import Runtime
from app.lifecycle.states import State

log = logging.getLogger("llmbox.manager")
ABANDONING = ("manual", "reconcile")  # unload reasons that stop a load in progress
REVOKE_TRIES = 3  # a manual/reconcile unload asks silent routers this often before it goes ahead


class Unloading:
    async def _unload(self, rt: Runtime, reason: str, drain_until: float | None = None) -> bool:
        """Unload the model (reason: idle, evicted, manual, reconcile); True if it was unloaded now.

        ``drain_until``: it is busy; wait (until then) for the requests in flight to end first.
        """
        while rt.loading():
            rt.abandon = rt.abandon or reason in ABANDONING  # a load that is no longer wanted stops
            await asyncio.wait([rt.loader])
        async with rt.lock:
            rt.abandon = False
            if rt.state == State.FAILED:
                self._set(rt, State.UNLOADED)
                return True
            if rt.state != State.READY:
                return False
            # From here on every new request comes through acquire. A silent router may still hold
            # the lease, so the model counts as busy: the reaper or eviction tries again later.
            revoked = False
            for _ in range(REVOKE_TRIES if reason in ABANDONING else 1):
                if revoked := await self._revoke(rt):
                    break
            if not revoked and reason not in ABANDONING:
                return False
            first_waiting = self._next_ticket  # requests counted in from here on wait for the next load
            if drain_until is not None:
                if not await self._drain(rt, first_waiting, drain_until):
                    return False
            elif reason in ("idle", "evicted") and rt.busy():
                return False  # a request arrived since the decision; no await separates this check from the state change
            if reason == "idle" and not reaper.idle(rt, self.clock()):
                return False  # the routers had used it since the reaper looked
            self._set(rt, State.UNLOADING)
            try:
                await asyncio.to_thread(self.apps.delete, rt.entry.id)
            finally:
                self._set(rt, State.UNLOADED)  # memory_gb stays: it sizes the next admission
                rt.tickets = {t: r for t, r in rt.tickets.items() if t >= first_waiting}
                rt.processes = []
            self.counters.count(self.counters.unloads, (rt.entry.id, reason))
            log.info("unloaded %s (%s)", rt.entry.id, reason)
            self._event("model_unloaded", rt, reason=reason)
            return True

    async def _drain(self, rt: Runtime, first_waiting: int, until: float) -> bool:
        """Let the requests in flight end (new ones wait for its reload); False if they do not in time."""
        rt.draining = True
        try:
            while rt.in_flight_before(first_waiting):
                if self.clock() > until:
                    return False
                await asyncio.sleep(self.config.drain_poll_s)
                await self.routers.read_usage(self.models)
            return True
        finally:
            rt.draining = False

    async def reap_once(self) -> None:
        """Unload models idle past their timeout; load always-on models whose download completed."""
        for rt in list(self.models.values()):
            if rt.pin_pending and rt.state == State.UNLOADED:
                self._check_weights(rt)
                if not rt.missing and rt.entry.serve and rt.entry.always_on:
                    rt.pin_pending = False
                    self._start_load(rt)
        if reaper.candidates(self.models.values(), self.clock()):
            await self.routers.read_usage(self.models)  # once per tick, and only when something looks idle
            for rt in list(self.models.values()):
                if reaper.idle(rt, self.clock()):  # by the routers' fresh counts too
                    self._spawn(self._unload(rt, "idle"), "unload")  # which revokes the routers' lease first

    async def _revoke(self, rt: Runtime) -> bool:
        """End the routers' lease on this model (a new number for the next grant); False if one is silent."""
        number, rt.lease = rt.lease, next(self._leases)
        return await self.routers.revoke(rt, number)
