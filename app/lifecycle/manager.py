"""The model manager: the single owner of model residency (one named, detached Ray actor).

Everything that changes a model's state funnels through here, on one asyncio loop, so two
requests can never start two loads of one model. Routers ``acquire`` before they forward and
``release`` after (counted per router replica); for a ready model they skip the manager under a
lease (app/serving/leases.py), which the manager revokes before any unload. Serve executes what
the manager decides through the injected ``apps`` (app/engines/serve_apps.py); the clock is
injected too, so the decisions are tested without Serve and without waiting.

Concepts live next door: states and outcomes (states.py), what is known per model (runtime.py),
admission (admission.py), the idle rule (reaper.py), the crash rule (watchdog.py), the routers
(routers.py), measurements, counters and the loops that survive their errors (loops.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.engines.engine_logs import last_error_line
from app.engines.llm_config import EngineHost, app_name, config_key, llm_config_dict, model_of
from app.engines.sources import NotDownloaded, SourceMissing, is_hub, resolve
from app.events import EventLog
from app.gpu.memory import CpuBudget, MemoryProbe, NvmlMemory
from app.hub import paths
from app.lifecycle import admission, loops, reaper, watchdog
from app.lifecycle.counters import Counters
from app.lifecycle.measurements import Measurements
from app.lifecycle.routers import RouterLink
from app.lifecycle.runtime import DIRECT, ManagerConfig, ModelView, Process, Runtime
from app.lifecycle.states import Outcome, State, check
from app.openai_errors import clean
from app.registry.schema import ModelEntry, Registry
from app.registry.store import RegistryStore

log = logging.getLogger("llmbox.manager")

ABANDONING = ("manual", "reconcile")  # unload reasons that stop a load in progress
REVOKE_TRIES = 3  # a manual/reconcile unload asks silent routers this often before it goes ahead


def _serve_apps():
    from app.engines import serve_apps

    return serve_apps


class ModelManager:
    """Run as a Ray actor (app/lifecycle/actor.py); every public method is called through its handle."""

    def __init__(self, config: ManagerConfig, apps=None, clock: Callable[[], float] = time.time,
                 memory: MemoryProbe | None = None, alive: Callable[[Process], bool] = watchdog.alive,
                 routers: RouterLink | None = None) -> None:
        self.config = config
        self.apps = apps if apps is not None else _serve_apps()
        self.clock = clock
        self.alive = alive
        self.store = RegistryStore(config.registry_path)
        self.host = EngineHost(device=config.device, cache_dir=Path(config.cache_dir),
                               models_dir=Path(config.models_dir))
        self.events = EventLog(Path(config.state_dir) / "events.jsonl")
        self.measurements = Measurements(config.state_dir)
        self.memory = memory or (NvmlMemory() if config.device == "gpu" else CpuBudget(config.cpu_memory_budget_gb))
        self.routers = routers or RouterLink()
        self.models: dict[str, Runtime] = {}
        self.counters = Counters()
        self.registry_revision = -1
        # Lease numbers only grow, also across restarts of this actor: routers ignore a grant that
        # is not newer than their last revocation, and a revocation must close any older grant.
        self._leases = itertools.count(int(clock() * 1000) << 16)
        self._next_ticket = 1
        self._reconciling = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._started = False

    # --- start-up, recovery and the registry --------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Adopt what runs (after a restart of this actor), start the loops, apply the registry."""
        if not self._started:
            self._started = True
            await self._recover()
            for name, interval, tick in (("reaper", self.config.reaper_interval_s, self.reap_once),
                                         ("watchdog", self.config.watch_interval_s, self.watch_once)):
                self._spawn(loops.every(interval, tick, name, self._loop_failed), name)
        return await self.reconcile()

    async def _recover(self) -> None:
        """Take over model applications that run (healthy models keep running); delete the rest."""
        snapshot = await asyncio.to_thread(self.apps.snapshot)
        self.routers.discover(snapshot)
        registry = await asyncio.to_thread(self.store.read)
        entries = {m.id: m for m in registry.models}
        for name, app in snapshot.items():
            model_id = model_of(name)
            if model_id is None:
                continue
            entry = entries.get(model_id)
            info = None
            if entry is not None and entry.serve and app.status == "RUNNING":
                info = await self._engine_info(model_id)
            if info is None:
                await asyncio.to_thread(self.apps.delete, model_id)  # half-started or unwanted: decide anew
                continue
            rt = self._runtime(entry, registry)
            rt.state, rt.since = State.READY, self.clock()  # adopted as it is, not a transition
            rt.config_key = await asyncio.to_thread(self.apps.deployed_key, model_id) or ""
            rt.lease = next(self._leases)
            self._watch(rt, info)
            log.info("adopted %s (pid %s) after a restart of the manager", model_id, info["pid"])
            self._event("model_adopted", rt, pid=info["pid"])

    async def reconcile(self) -> dict[str, Any]:
        """Apply the registry: new models appear, removed or unserved ones unload, changed ones reload.

        One at a time, re-reading the registry inside the lock, so the last reconcile applies the
        newest registry; an entry that fails does not stop the others.
        """
        async with self._reconciling:
            registry = await asyncio.to_thread(self.store.read)
            self.registry_revision = registry.revision
            actions: dict[str, str] = {}
            wanted = {m.id for m in registry.models}
            for model_id in [m for m in self.models if m not in wanted]:
                actions[model_id] = await self._guarded(model_id, self._remove(self.models[model_id]), "removed")
            for entry in registry.models:
                actions[entry.id] = await self._guarded(entry.id, self._apply_entry(entry, registry))
            return {"revision": registry.revision, "actions": actions}

    async def _guarded(self, model_id: str, work, done: str | None = None) -> str:
        try:
            result = await work
            return done or result
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the others
            log.exception("reconcile of %s failed", model_id)
            self.events.record("reconcile_failed", model=model_id, error=clean(exc))
            return f"error: {clean(exc)}"

    async def _remove(self, rt: Runtime) -> None:
        try:
            await self._unload(rt, "reconcile")
        finally:
            self.models.pop(rt.entry.id, None)

    def _runtime(self, entry: ModelEntry, registry: Registry) -> Runtime:
        rt = self.models.get(entry.id)
        if rt is None:
            rt = self.models[entry.id] = Runtime(entry=entry, idle_timeout_s=registry.idle_timeout_s(entry),
                                                 since=self.clock())
            known = self.measurements.get(entry.id, entry.source)  # measured before a restart of the box
            if known:
                rt.memory_gb, rt.last_load_s = known.get("memory_gb"), known.get("load_s")
        return rt

    async def _apply_entry(self, entry: ModelEntry, registry: Registry) -> str:
        rt = self._runtime(entry, registry)
        changed = bool(rt.config_key) and rt.config_key != self._config_key(entry)
        rt.entry, rt.idle_timeout_s = entry, registry.idle_timeout_s(entry)
        self._check_weights(rt)
        if not entry.serve:
            if rt.state != State.UNLOADED or rt.loading():
                await self._unload(rt, "reconcile")
                return "unloaded (serve: false)"
            return "not served"
        if changed and rt.state == State.READY:
            await self._unload(rt, "reconcile")
            self._start_load(rt)
            return "reloading (engine settings changed)"
        if changed and rt.pending():
            return "loading; the new engine settings apply before it is ready"  # _load checks again
        if changed and rt.state == State.FAILED:
            rt.failures = 0  # new settings deserve an attempt now, not after the old backoff
        if entry.always_on and rt.state in (State.UNLOADED, State.FAILED):
            if rt.missing:
                rt.pin_pending = True  # the reaper loads it once the download completes
                return "always on: waiting for its download"
            self._start_load(rt)
            return "loading (always on)"
        return rt.display_state()

    def _check_weights(self, rt: Runtime) -> None:
        """Note whether the model's weights are servable now; while not, attach its download record."""
        rt.missing = rt.download = None
        if not is_hub(rt.entry):
            return  # local folders: a missing one is a load failure with the path in the reason
        try:
            resolve(rt.entry, self.host.models_dir)
        except NotDownloaded as exc:
            rt.missing = str(exc)
            rt.download = self._download_record(rt.entry)

    def _download_record(self, entry: ModelEntry) -> dict[str, Any] | None:
        """The management API's record of this repo's download (progress), if there is one."""
        import json

        path = paths.record_path(Path(self.config.state_dir), entry.source, entry.revision)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        keys = ("state", "percent", "bytes_done", "bytes_total", "rate_bps", "eta_s", "error")
        return {k: record.get(k) for k in keys}

    def _config(self, entry: ModelEntry) -> dict[str, Any]:
        return llm_config_dict(entry, self.host)

    def _config_key(self, entry: ModelEntry) -> str:
        try:
            return config_key(self._config(entry))
        except SourceMissing as exc:
            return f"missing: {exc}"

    # --- what the routers call -------------------------------------------------------------
    async def acquire(self, model_id: str, router: str = DIRECT) -> dict[str, Any]:
        """Count a request in and make sure its model is (being) loaded.

        Returns ``{"outcome": Outcome, "model": ModelView}``; with READY also ``lease``, and with
        READY or PENDING a ``ticket``: the request is counted in, call ``release(model, ticket)``.
        """
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": Outcome.UNKNOWN}
        if not rt.entry.serve:
            return self._answer(Outcome.NOT_SERVED, rt)
        if rt.missing:
            self._check_weights(rt)
            if rt.missing:
                return self._answer(Outcome.DOWNLOADING, rt)
        if rt.state == State.FAILED and self.clock() < rt.since + rt.backoff_s():
            return self._answer(Outcome.FAILED, rt)
        ticket = self._count_in(rt, router)
        if rt.state == State.READY:
            return {**self._answer(Outcome.READY, rt), "lease": rt.lease, "ticket": ticket}
        self._start_load(rt)
        return {**self._answer(Outcome.PENDING, rt), "ticket": ticket}

    async def wait(self, model_id: str, timeout_s: float, queued_at: float) -> dict[str, Any]:
        """Wait until the model is no longer pending (or ``timeout_s``); returns the outcome then.

        ``queued_at`` is when the waiting request arrived: its queue wait is recorded once ready.
        """
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": Outcome.UNKNOWN}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while rt.pending() and loop.time() < deadline:
            if rt.loading():
                await asyncio.wait([rt.loader], timeout=deadline - loop.time())  # never cancels the load
            else:
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        if self.models.get(model_id) is not rt:
            return {"outcome": Outcome.UNKNOWN}
        if not rt.entry.serve:
            return self._answer(Outcome.NOT_SERVED, rt)
        if rt.state == State.READY:
            self.counters.observe(self.counters.queue_wait, model_id, self.clock() - queued_at)
            return {**self._answer(Outcome.READY, rt), "lease": rt.lease}
        if rt.pending():
            return self._answer(Outcome.PENDING, rt)
        if rt.state == State.FAILED:
            return self._answer(Outcome.FAILED, rt)
        return self._answer(Outcome.REFUSED if rt.refused else Outcome.PENDING, rt)

    async def release(self, model_id: str, ticket: int | None = None) -> None:
        """A request counted in by ``acquire`` has finished (or given up)."""
        rt = self.models.get(model_id)
        if rt is not None:
            rt.tickets.pop(ticket, None)
            rt.last_used = self.clock()

    async def attach_router(self, app: str, deployment: str | None = None) -> None:
        """A router replica has started: include it in usage reads and lease revocations now."""
        self.routers.attach(app)

    async def check(self, model_id: str) -> None:
        """A router's request to this model failed: look at the model now, not at the next tick."""
        rt = self.models.get(model_id)
        if rt is not None and rt.state == State.READY:
            await self._watch_models([rt])

    def _count_in(self, rt: Runtime, router: str) -> int:
        ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
        rt.tickets[ticket] = router
        rt.last_used = self.clock()
        return ticket

    def _answer(self, outcome: Outcome, rt: Runtime) -> dict[str, Any]:
        return {"outcome": outcome, "model": rt.view(self.clock())}

    # --- what the API, the box and tests call --------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """A snapshot of every model, the memory picture and the registry revision."""
        await self.routers.read_usage(self.models)
        for rt in self.models.values():
            if rt.missing:
                self._check_weights(rt)  # progress, or the download has completed
        held, coming = admission.held_gb(self.models.values()), admission.coming_gb(self.models.values())
        return {
            "revision": self.registry_revision,
            "device": self.config.device,
            "memory": {"total_gb": round(self.memory.total_gb(), 2), "used_by_models_gb": round(held + coming, 2),
                       "free_gb": round(self.memory.free_gb(held, coming), 2)},
            "models": self._views(),
        }

    async def metrics_snapshot(self) -> dict[str, Any]:
        await self.routers.read_usage(self.models)
        return {"models": self._views(), **self.counters.public()}

    def _views(self) -> list[ModelView]:
        now = self.clock()
        return [rt.view(now) for rt in self.models.values()]

    async def load(self, model_id: str) -> dict[str, Any]:
        """Load now (llama.cpp's /models/load); returns at once with the model's view."""
        rt = self.models.get(model_id)
        if rt is None or not rt.entry.serve:
            return {"outcome": Outcome.UNKNOWN if rt is None else Outcome.NOT_SERVED}
        self._check_weights(rt)
        if rt.missing:
            return self._answer(Outcome.DOWNLOADING, rt)
        if rt.state in (State.UNLOADED, State.FAILED):
            self._start_load(rt)
        return self._answer(Outcome.OK, rt)

    async def unload(self, model_id: str) -> dict[str, Any]:
        """Unload now (llama.cpp's /models/unload), even if pinned; waits until it is gone."""
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": Outcome.UNKNOWN}
        await self._unload(rt, "manual")
        return self._answer(Outcome.OK, rt)

    async def cluster(self) -> dict[str, Any]:
        """Ray Serve's applications and their health."""
        return await asyncio.to_thread(self.apps.cluster)

    async def replica_pids(self, model_id: str) -> list[int]:
        rt = self.models.get(model_id)
        return list(rt.pids) if rt is not None and rt.state == State.READY else []

    # --- loading -------------------------------------------------------------------------
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
                refusal = await self._make_room(rt, need)
                if refusal or rt.abandon:
                    return self._stop_loading(rt, refusal)
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
            rt.pids, rt.processes, rt.log_path = [], [], None
            return
        rt.pids = [info["pid"]]
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

    # --- memory: admission and eviction ---------------------------------------------------
    async def _make_room(self, rt: Runtime, need: float) -> str | None:
        """Evict idle unpinned models, least valuable first, until ``need`` fits; else the refusal."""
        skipped: set[str] = set()
        while True:
            models = self.models.values()
            free = self.memory.free_gb(admission.held_gb(models, exclude=rt), admission.coming_gb(models, exclude=rt))
            if need <= free:
                return None
            await self.routers.read_usage(self.models)  # who is busy, and when each was last used, as of now
            victims = [v for v in admission.victims(self.models.values(), rt, self.clock())
                       if v.entry.id not in skipped]
            if not victims:
                return admission.refusal(rt, need, free, self.memory.total_gb(), self.models.values())
            log.info("evicting %s to make room for %s", victims[0].entry.id, rt.entry.id)
            if not await self._unload(victims[0], "evicted"):
                skipped.add(victims[0].entry.id)  # it became busy (or a router did not answer)

    # --- unloading, the reaper and the watchdog --------------------------------------------------
    async def _unload(self, rt: Runtime, reason: str) -> bool:
        """Unload the model (reason: idle, evicted, manual, reconcile); True if it was unloaded now."""
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
            for attempt in range(1 if reason not in ABANDONING else REVOKE_TRIES):
                if await self._revoke(rt):  # from here on every new request comes through acquire
                    break
                if reason not in ABANDONING:
                    return False  # a silent router counts as busy: the reaper or eviction tries again later
            if reason in ("idle", "evicted") and rt.busy():
                return False  # a request arrived since the decision; no await separates this check from the state change
            if reason == "idle" and not reaper.idle(rt, self.clock()):
                return False  # the routers had used it since the reaper looked
            self._set(rt, State.UNLOADING)
            first_waiting = self._next_ticket  # requests counted in from now on wait for the next load
            try:
                await asyncio.to_thread(self.apps.delete, rt.entry.id)
            finally:
                self._set(rt, State.UNLOADED)  # memory_gb stays: it sizes the next admission
                rt.tickets = {t: r for t, r in rt.tickets.items() if t >= first_waiting}
                rt.pids, rt.processes = [], []
            self.counters.count(self.counters.unloads, (rt.entry.id, reason))
            log.info("unloaded %s (%s)", rt.entry.id, reason)
            self._event("model_unloaded", rt, reason=reason)
            return True

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
            for rt in reaper.candidates(self.models.values(), self.clock()):
                if reaper.idle(rt, self.clock()):
                    self._spawn(self._unload(rt, "idle"), "unload")  # which revokes the routers' lease first

    async def watch_once(self) -> None:
        """Check every READY model's application, replica and engine processes; drop dead routers."""
        await self._watch_models(list(self.models.values()), prune_routers=True)

    async def _watch_models(self, models: list[Runtime], prune_routers: bool = False) -> None:
        taken, mark = self.clock(), self._next_ticket
        snapshot = await asyncio.to_thread(self.apps.snapshot)
        if prune_routers:
            self.routers.forget_dead(self.models.values(), self.routers.discover(snapshot), mark)
        for rt in models:
            if rt.state != State.READY or rt.lock.locked() or rt.since > taken:
                continue  # a load or unload in progress owns it; or it became ready after the snapshot
            crash = watchdog.find_crash(rt, snapshot.get(app_name(rt.entry.id)), self.alive)
            if crash is not None:
                self._crashed(rt, crash)

    def _crashed(self, rt: Runtime, crash: watchdog.Crash) -> None:
        """A READY model's engine or replica died: RESTARTING at once (so no request is sent to it
        again), then its reload, which first records the crash and removes what is left of it."""
        self._set(rt, State.RESTARTING)
        rt.tickets.clear()  # the requests in flight died with it
        rt.loader = self._spawn(self._load(rt, crash), "restart")

    async def _record_crash(self, rt: Runtime, crash: watchdog.Crash) -> bool:
        """Event, counter, the crash's cause, and Serve's app deleted; False after too many crashes."""
        info = await self._engine_info(rt.entry.id) if crash.process == "engine" else None
        exited = ((info or {}).get("exited") or [{}])[0]
        last_error = (info or {}).get("last_error") or await asyncio.to_thread(last_error_line, rt.log_path)
        now = self.clock()
        rt.crashes.append(now)
        while rt.crashes and rt.crashes[0] < now - self.config.crash_window_s:
            rt.crashes.popleft()
        await self._revoke(rt)  # the routers' fast path is closed (best effort: a silent one heals itself)
        how = f"exit code {exited['exit_code']}" if exited.get("exit_code") is not None else "exited"
        if exited.get("signal"):
            how = f"killed by {exited['signal']}"
        rt.last_error = f"its {crash.process} crashed ({how}){': ' + last_error if last_error else ''}"
        self.counters.count(self.counters.crashes, rt.entry.id)
        log.warning("%s: %s (%s)", rt.entry.id, rt.last_error, crash.detail)
        self._event("engine_crashed", rt, process=crash.process, pid=crash.pid, detail=crash.detail,
                    exit_code=exited.get("exit_code"), signal=exited.get("signal"), last_error=last_error,
                    crashes_in_window=len(rt.crashes))
        await asyncio.to_thread(self.apps.delete, rt.entry.id)  # Serve never restarts it behind our back
        rt.pids, rt.processes = [], []
        if len(rt.crashes) < self.config.crash_limit:
            return True
        rt.failures += 1
        rt.last_error = (f"crashed {len(rt.crashes)} times within {self.config.crash_window_s / 60:.0f} "
                         f"minutes; last: {rt.last_error}")
        self._set(rt, State.FAILED)
        self.counters.count(self.counters.loads, (rt.entry.id, "failed"))
        self._event("model_load_failed", rt, reason=rt.last_error)
        return False

    async def _revoke(self, rt: Runtime) -> bool:
        """End the routers' lease on this model (a new number for the next grant); False if one is silent."""
        number, rt.lease = rt.lease, next(self._leases)
        return await self.routers.revoke(rt, number)

    # --- helpers -------------------------------------------------------------------------
    def _set(self, rt: Runtime, state: State) -> None:
        check(rt.state, state)
        rt.state, rt.since = state, self.clock()

    def _event(self, kind: str, rt: Runtime, **data: Any) -> None:
        try:
            self.events.record(kind, model=rt.entry.id, **data)
        except OSError as exc:  # the log is a record, not a reason to fail a load
            log.warning("could not write event %s: %s", kind, exc)

    def _loop_failed(self, name: str) -> None:
        self.counters.count(self.counters.loop_errors, name)

    def _spawn(self, coro, what: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)

        def done(finished: asyncio.Task) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background %s failed", what, exc_info=finished.exception())
                self._loop_failed(what)

        task.add_done_callback(done)
        return task
