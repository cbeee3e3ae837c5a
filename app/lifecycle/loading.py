"""Loading: the one pipeline every load runs (admission, deploy, wait for Serve, record what runs).

Part of the model manager (``ModelManager`` mixes this in; it owns the state this works on: the
models, the Serve executor ``apps``, the clock, the memory probe, counters and events). A load
is single flight per model, holds the model's lock from admission to READY, and ends READY,
FAILED (the engine's reason, cleaned) or UNLOADED (refused for memory, or abandoned).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.engines.llm_config import config_key
from app.lifecycle import admission, watchdog
from app.lifecycle.runtime import Process, Runtime
from app.lifecycle.states import State
from app.openai_errors import clean

log = logging.getLogger("llmbox.manager")


class Loading:
    def _start_load(self, rt: Runtime) -> None:
        if rt.loading():
            return  # single flight: the running load serves every waiter
        if rt.state in (State.UNLOADED, State.FAILED):
            self._set(rt, State.LOADING)  # visible at once; behind an unload, _load sets it
        rt.loader = self._spawn(self._load(rt), "load")

    async def _load(self, rt: Runtime, crash: watchdog.Crash | None = None) -> None:
        """The one load pipeline: (after a crash, its record first) admission, deploy, wait, measure."""
        async with rt.lock:
            if crash is not None and not await self._record_crash(rt, crash):
                return  # too many crashes: FAILED, no reload
            if rt.state in (State.UNLOADED, State.FAILED):  # we were queued behind an unload
                self._set(rt, State.LOADING)
            if rt.state not in (State.LOADING, State.RESTARTING):
                return
            started = self.clock()
            model_id = rt.entry.id
            rt.refused = False
            try:
                need = admission.need_gb(rt)
                refusal = await self._make_room(rt, need, started + self.config.load_timeout_s)
                if refusal or rt.abandon:
                    return self._stop_loading(rt, refusal)
                rt.admitted = True  # from here on its need counts against free memory
                while True:
                    config = self._config(rt.entry)
                    rt.config_key = config_key(config)
                    await asyncio.to_thread(self.apps.deploy, model_id, config)
                    error = await self._wait_running(rt, started)
                    if rt.abandon:
                        await asyncio.to_thread(self.apps.delete, model_id)
                        return self._stop_loading(rt, None)
                    if error:
                        return await self._fail(rt, error)
                    info = await self._engine_info(model_id)
                    if self._config_key(rt.entry) == rt.config_key:
                        break
                    log.info("engine settings of %s changed during its load: loading it again", model_id)
                    await asyncio.to_thread(self.apps.delete, model_id)
                self._watch(rt, info)
                rt.memory_gb = round(await asyncio.to_thread(self.memory.process_gb, rt.pids), 3) if rt.pids else None
                rt.last_load_s = round(self.clock() - started, 2)
                rt.failures, rt.last_error = 0, None
                rt.lease = next(self._leases)
                self._set(rt, State.READY)
            except Exception as exc:  # any failure of a load is the model's state, not a crash
                log.exception("load of %s failed", model_id)
                return await self._fail(rt, clean(f"{type(exc).__name__}: {exc}"))
        self.counters.count(self.counters.loads, (model_id, "ok"))
        self.counters.observe(self.counters.load_seconds, model_id, rt.last_load_s)
        log.info("loaded %s in %.1f s (%.2f GB)", model_id, rt.last_load_s, rt.memory_gb or 0)
        self._event("model_loaded", rt, seconds=rt.last_load_s, memory_gb=rt.memory_gb)
        self.measurements.remember(model_id, rt.entry.source, rt.memory_gb, rt.last_load_s)

    def _stop_loading(self, rt: Runtime, refusal: str | None) -> None:
        """The load ends without an engine: refused for memory, or abandoned."""
        self._set(rt, State.UNLOADED)
        if refusal:
            rt.refused, rt.last_error = True, refusal
            self.counters.count(self.counters.loads, (rt.entry.id, "no_memory"))
            self._event("model_load_refused", rt, reason=refusal)
        else:
            self._event("model_load_abandoned", rt)

    async def _wait_running(self, rt: Runtime, started: float) -> str | None:
        """Poll Serve until the app runs (None) or fails (the reason); stops early when abandoned."""
        deadline = started + self.config.load_timeout_s
        while not rt.abandon:
            app = await asyncio.to_thread(self.apps.status, rt.entry.id)
            if app.status == "RUNNING":
                return None
            # "failed to start": Serve would retry the replica; the manager decides instead.
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY") or "failed to start" in app.message:
                return clean(app.message or app.status)
            if self.clock() > deadline:
                return f"load did not finish within {self.config.load_timeout_s:.0f} s"
            await asyncio.sleep(self.config.poll_interval_s)
        return None

    async def _engine_info(self, model_id: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self.apps.engine_info, model_id)
        except Exception as exc:  # noqa: BLE001 - the replica may be gone or busy
            log.warning("the replica of %s did not report its engine: %s", model_id, exc)
            return None

    def _watch(self, rt: Runtime, info: dict[str, Any] | None) -> None:
        """Record the processes the watchdog checks from now on."""
        if not info:
            rt.processes, rt.log_path = [], None
            return
        rt.processes = [Process(info["pid"], info["create_time"], "replica", "replica")]
        rt.processes += [Process(p["pid"], p["create_time"], p["name"], "engine") for p in info.get("processes", [])]
        rt.log_path = info.get("log")

    async def _fail(self, rt: Runtime, reason: str) -> None:
        log.warning("load of %s failed: %s", rt.entry.id, reason)
        rt.failures += 1
        rt.last_error = reason
        self._set(rt, State.FAILED)
        self.counters.count(self.counters.loads, (rt.entry.id, "failed"))
        self.counters.count(self.counters.unloads, (rt.entry.id, "failed"))
        self._event("model_load_failed", rt, reason=reason)
        await asyncio.to_thread(self.apps.delete, rt.entry.id)  # free whatever it holds

    async def _make_room(self, rt: Runtime, need: float, deadline: float) -> str | None:
        """Evict idle models, else drain busy ones, until ``need`` fits; else the refusal (see admission.py)."""
        skipped: set[str] = set()
        while True:
            models = self.models.values()
            free = self.memory.free_gb(admission.held_gb(models, exclude=rt), admission.coming_gb(models, exclude=rt))
            if need <= free:
                return None
            now = self.clock()
            if need > admission.ceiling_gb(models, rt, self.memory.total_gb()) or now > deadline:
                return admission.refusal(rt, need, free, self.memory.total_gb(), models)
            await self.routers.read_usage(self.models)  # who is busy, and when each was last used, as of now
            idle = [v for v in admission.victims(self.models.values(), rt, now) if v.entry.id not in skipped]
            busy = [v for v in admission.drainable(self.models.values(), rt, now) if v.entry.id not in skipped]
            if idle or busy:
                victim = (idle or busy)[0]
                log.info("%s %s to make room for %s", "evicting" if idle else "draining", victim.entry.id, rt.entry.id)
                if not await self._unload(victim, "evicted", drain_until=None if idle else deadline):
                    skipped.add(victim.entry.id)  # it became busy, a router did not answer, or it would not drain
            else:
                await asyncio.sleep(self.config.drain_poll_s)  # the memory is being loaded or drained by others
