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

from app.engines import host_rules
from app.engines.llm_config import Placement
from app.gpu.memory import Device
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
                if refused := host_rules.refusal(rt.entry, self.host):  # before admission evicts anyone for it
                    return await self._fail(rt, refused)
                rt.config_key = self._config_key(rt.entry)  # the settings this load applies (reconcile compares)
                rt.budget = await asyncio.to_thread(self._budget, rt.entry)
                refusal = await self._make_room(rt, started + self.config.load_timeout_s)
                if refusal or rt.abandon:
                    return self._stop_loading(rt, refusal)
                while True:
                    rt.config_key = self._config_key(rt.entry)
                    before = await asyncio.to_thread(self._used_gb, rt.placement)
                    await asyncio.to_thread(self.apps.deploy, model_id, self._config(rt.entry, rt.placement),
                                            rt.config_key, rt.placement)
                    error = await self._wait_running(rt, started)
                    if rt.abandon:
                        await asyncio.to_thread(self.apps.delete, model_id)
                        return self._stop_loading(rt, None)
                    if error:
                        return await self._fail(rt, error)
                    info = await self._engine_info(model_id)
                    if not (info and info.get("endpoint")):  # requests go to that port (app/serving/proxy.py)
                        return await self._fail(rt, "its replica did not report the port it serves on "
                                                "(its log says why: var/ray/session_latest/logs/serve/)")
                    if self._config_key(rt.entry) == rt.config_key:
                        break
                    log.info("engine settings of %s changed during its load: loading it again", model_id)
                    await asyncio.to_thread(self.apps.delete, model_id)
                self._watch(rt, info)
                rt.memory_gb = await asyncio.to_thread(self._measure, rt, before, started)
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
            # Admission placed it, but Ray cannot (resources it does not know, another user of the
            # cluster): fail now with the reason, not after the load deadline.
            if "to be scheduled" in app.message:
                return f"could not be placed: {clean(app.message)}"
            if app.status == "DEPLOYING" and (why := await asyncio.to_thread(self.apps.unplaceable, rt.entry.id)):
                return f"could not be placed: {why}"
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
            rt.processes, rt.log_path, rt.endpoint = [], None, None
            return
        rt.endpoint = info.get("endpoint")
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

    async def _make_room(self, rt: Runtime, deadline: float) -> str | None:
        """Evict idle models, else drain busy ones, until it fits somewhere, then book it there
        (``rt.placement``); else the refusal. See admission.py."""
        skipped: set[str] = set()
        read = False
        while True:
            devices = [d for d in await asyncio.to_thread(self.memory.devices) if d.node not in self.leaving]
            now = self.clock()
            plan = admission.plan(self.models.values(), rt, devices, now, frozenset(skipped))
            if plan.gpus is not None:
                if rt.abandon:
                    return None
                # Booked at once, with no await between the plan and the booking: a concurrent
                # load plans against this booking, not against the same free memory.
                rt.placement, rt.admitted = self._place(rt, plan, devices), True
                return None
            if plan.never or now > deadline:
                return plan.never or admission.refusal(rt, devices, self.models.values())
            if not read:  # who is busy, and when each was last used, as of now; then plan again
                await self.routers.read_usage(self.models)
                read = True
                continue
            read = False
            victim = plan.victim
            if victim is not None:
                idle = not victim.busy()
                log.info("%s %s to make room for %s", "evicting" if idle else "draining", victim.entry.id, rt.entry.id)
                if not await self._unload(victim, "evicted", drain_until=None if idle else deadline):
                    skipped.add(victim.entry.id)  # it became busy, a router did not answer, or it would not drain
            else:
                await asyncio.sleep(self.config.drain_poll_s)  # the memory is being loaded or drained by others

    def _place(self, rt: Runtime, plan: admission.Plan, devices: list[Device]) -> Placement:
        """What ``rt`` books on its devices and what its engine is told (see llm_config.py)."""
        chosen = [d for d in devices if d.node == plan.node and d.index in plan.gpus]
        smallest = min(chosen, key=lambda d: d.total_gb)
        need = admission.need_gb(rt, smallest)
        if self.memory.kind != "gpu":
            return Placement(tuple(plan.gpus), need, node=plan.node)
        declared = rt.entry.memory_gb or rt.entry.engine.gpu_memory_utilization
        kv = rt.budget.kv_per_device if rt.budget is not None and not declared else None
        return Placement.on_gpus(plan.gpus, need, smallest.total_gb, kv, plan.node)

    def _used_gb(self, placement: Placement) -> dict[int, float] | None:
        """What its GPUs hold now (NVML), to attribute the difference after its load."""
        if self.memory.kind != "gpu":
            return None
        return {d.index: d.total_gb - d.free_gb for d in self.memory.devices()
                if d.node == placement.node and d.index in placement.gpus}

    def _measure(self, rt: Runtime, before: dict[int, float] | None, started: float) -> float | None:
        """What the loaded model takes, or None (not measured: its budget stays what counts).

        CPU: the PSS of its processes. GPU: what its GPUs hold now less what they held before its
        deploy (NVML's per-process figures name host PIDs inside a container, need privileges on
        MIG, and miss TP workers), unless another model loaded or unloaded on them meanwhile."""
        if before is None:
            measured = self.memory.process_gb(rt.pids, rt.placement.node) if rt.pids else None
            return round(measured, 3) if measured else None
        overlapping = [r for r in self.models.values() if r is not rt and r.placement is not None
                       and r.placement.node == rt.placement.node and set(r.placement.gpus) & set(before)
                       and (r.since >= started or r.state in admission.COMING)]
        if overlapping:
            log.info("not measuring %s: %s changed on its GPUs during its load", rt.entry.id,
                     ", ".join(r.entry.id for r in overlapping))
            return None
        after = self._used_gb(rt.placement) or {}
        delta = sum(after.get(i, 0.0) - used for i, used in before.items())
        return round(delta, 3) if delta > 0.05 else None
