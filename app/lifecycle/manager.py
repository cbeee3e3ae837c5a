"""The model manager: the single owner of model residency (one named, detached Ray actor).

Everything that changes a model's state funnels through here, on one asyncio loop, so two
requests can never start two loads of one model. Routers ``acquire`` before they forward and
``release`` after (counted per router replica); for a ready model they skip the manager under a
lease (app/serving/leases.py), which the manager revokes before any unload. Serve executes what
the manager decides through the injected ``apps`` (app/engines/serve_apps.py); the clock is
injected too, so the decisions are tested without Serve and without waiting.

Concepts live next door: states and outcomes (states.py), what is known per model (runtime.py),
the load pipeline (loading.py), unloads and drains (unloading.py), the crash rule and what
follows a crash (watchdog.py), admission (admission.py), the idle rule (reaper.py), the routers
(routers.py), weights (weights.py), measurements, counters and the loops that survive their
errors (loops.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.engines.budget import model_budget
from app.engines.llm_config import EngineHost, Placement, config_key, llm_config_dict, model_of
from app.engines.sources import resolve
from app.engines.sources import SourceMissing
from app.engines.host_rules import NotAllowedOnHost
from app.events import EventLog
from app.gpu.memory import CpuBudget, MemoryProbe, NvmlMemory
from app.lifecycle import admission, loops, watchdog, weights
from app.lifecycle.counters import Counters
from app.lifecycle.loading import Loading
from app.lifecycle.measurements import Measurements
from app.lifecycle.nodes import Nodes
from app.lifecycle.routers import RouterLink
from app.lifecycle.runtime import DIRECT, ManagerConfig, ModelView, Process, Runtime
from app.lifecycle.states import Outcome, State, check
from app.lifecycle.unloading import Unloading
from app.lifecycle.watchdog import Watching
from app.openai_errors import clean
from app.registry.schema import ModelEntry, Registry
from app.registry.store import RegistryStore

log = logging.getLogger("llmbox.manager")


def _serve_apps():
    from app.engines import serve_apps

    return serve_apps


class ModelManager(Loading, Unloading, Watching, Nodes):
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
                               models_dir=Path(config.models_dir), model_roots=tuple(map(Path, config.model_roots)),
                               allow_remote_code=config.allow_remote_code)
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
        self._starting: asyncio.Future | None = None  # recovery, then the loops: once per actor
        self._publishing = False  # a push of the views to the routers is due
        self._push: asyncio.Task | None = None  # the last push
        self._node_ids: dict[str, str] = {}  # node name -> the Ray id it had when last seen alive
        self.leaving: set[str] = set()  # nodes leaving the cluster: nothing new is placed there

    # --- start-up, recovery and the registry --------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Adopt what runs (after a restart of this actor), start the loops, apply the registry."""
        await self._ready()
        return await self.reconcile()

    async def _ready(self) -> None:
        """Recovery has run (every call that reads or changes residency waits for it: a model
        that is still running must not look unknown, or be loaded again, while it is adopted)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_once())
        await asyncio.shield(self._starting)

    async def _start_once(self) -> None:
        try:
            await self._recover()
        except Exception:  # noqa: BLE001 - serve what can be served; reconcile decides the rest
            log.exception("recovery after a restart of the manager failed")
            self._loop_failed("recovery")
        for name, interval, tick in (("reaper", self.config.reaper_interval_s, self.reap_once),
                                     ("watchdog", self.config.watch_interval_s, self.watch_once)):
            self._spawn(loops.every(interval, tick, name, self._loop_failed), name)

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
            if info is None or not info.get("endpoint"):  # half-started, unwanted or from before the
                # native data path: decide anew
                await asyncio.to_thread(self.apps.delete, model_id)
                continue
            rt = self._runtime(entry, registry)
            rt.state, rt.since = State.READY, self.clock()  # adopted as it is, not a transition
            record = await asyncio.to_thread(self.apps.deployed, model_id)
            rt.config_key, rt.placement = record or ("", None)
            if rt.placement is None:  # deployed by an older manager: book its need where it must be
                rt.placement = Placement((0,), admission.need_gb(rt))
            rt.lease = next(self._leases)
            self._watch(rt, info)
            log.info("adopted %s (pid %s) after a restart of the manager", model_id, info["pid"])
            self._event("model_adopted", rt, pid=info["pid"])

    async def reconcile(self) -> dict[str, Any]:
        """Apply the registry: new models appear, removed or unserved ones unload, changed ones reload.

        One at a time, re-reading the registry inside the lock, so the last reconcile applies the
        newest registry; an entry that fails does not stop the others.
        """
        await self._ready()
        async with self._reconciling:
            registry = await asyncio.to_thread(self.store.read)
            self.registry_revision = registry.revision
            actions: dict[str, str] = {}
            wanted = {m.id for m in registry.models}
            for model_id in [m for m in self.models if m not in wanted]:
                actions[model_id] = await self._guarded(model_id, self._remove(self.models[model_id]), "removed")
            for entry in registry.models:
                actions[entry.id] = await self._guarded(entry.id, self._apply_entry(entry, registry))
            self._publish()  # models added, removed or (un)served change what routers list
            await self._pushed()
            return {"revision": registry.revision, "actions": actions}

    async def _guarded(self, model_id: str, work, done: str | None = None) -> str:
        try:
            result = await work
            return done or result
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the others
            log.exception("reconcile of %s failed", model_id)
            reason = clean(f"{type(exc).__name__}: {exc}")
            self.events.record("reconcile_failed", model=model_id, error=reason)
            return f"error: {reason}"

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
        weights.check(rt, self.host.models_dir, self.config.state_dir)

    def _config(self, entry: ModelEntry, placement: Placement | None = None) -> dict[str, Any]:
        return llm_config_dict(entry, self.host, placement)

    def _budget(self, entry: ModelEntry):
        """Its budget from its files (None when they say too little, or are not there)."""
        try:
            return model_budget(entry, resolve(entry, self.host.models_dir), self.memory.kind)
        except (OSError, ValueError, KeyError, SourceMissing) as exc:
            log.info("no budget for %s from its files: %s", entry.id, exc)
            return None

    def _config_key(self, entry: ModelEntry) -> str:
        """Its settings as a comparable string: the engine config without placement, and the
        embedding prefixes (routers keep them with their lease, so a change means a reload)."""
        try:
            key = config_key(self._config(entry))
        except SourceMissing as exc:
            return f"missing: {exc}"
        except NotAllowedOnHost as exc:  # its load fails at once with this reason (loading.py)
            return f"refused: {exc}"
        if entry.embed_prefixes is not None:
            key += f" prefixes={config_key(entry.embed_prefixes.model_dump())}"
        return key

    # --- what the routers call -------------------------------------------------------------
    async def acquire(self, model_id: str, router: str = DIRECT) -> dict[str, Any]:
        """Count a request in and make sure its model is (being) loaded.

        Returns ``{"outcome": Outcome, "model": ModelView}``; with READY also ``lease``, and with
        READY or PENDING a ``ticket``: the request is counted in, call ``release(model, ticket)``.
        """
        await self._ready()
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
        if rt.state == State.READY and not rt.draining:
            return {**self._answer(Outcome.READY, rt), "lease": rt.lease, "ticket": ticket}
        self._start_load(rt)  # while it drains: queued behind the unload, it loads it again
        return {**self._answer(Outcome.PENDING, rt), "ticket": ticket}

    async def wait(self, model_id: str, timeout_s: float, queued_at: float | None = None) -> dict[str, Any]:
        """Wait until the model is no longer pending (or ``timeout_s``); returns the outcome then.

        ``queued_at`` is when the waiting request arrived: its queue wait is recorded once ready.
        A router's wait shared by several requests passes None, and each of them reports its own
        (``waited``).
        """
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": Outcome.UNKNOWN}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (rt.pending() or rt.draining) and loop.time() < deadline:
            if rt.loading():
                await asyncio.wait([rt.loader], timeout=deadline - loop.time())  # never cancels the load
            else:
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        if self.models.get(model_id) is not rt:
            return {"outcome": Outcome.UNKNOWN}
        if not rt.entry.serve:
            return self._answer(Outcome.NOT_SERVED, rt)
        if rt.state == State.READY and not rt.draining:
            if queued_at is not None:
                self.counters.observe(self.counters.queue_wait, model_id, self.clock() - queued_at)
            return {**self._answer(Outcome.READY, rt), "lease": rt.lease}
        if rt.pending() or rt.draining:
            return self._answer(Outcome.PENDING, rt)
        if rt.state == State.FAILED:
            return self._answer(Outcome.FAILED, rt)
        return self._answer(Outcome.REFUSED if rt.refused else Outcome.PENDING, rt)

    async def waited(self, model_id: str, seconds: float) -> None:
        """A request that waited for this model (through a shared wait) is being served now."""
        if model_id in self.models:
            self.counters.observe(self.counters.queue_wait, model_id, seconds)

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
        await self._ready()
        await self.routers.read_usage(self.models)
        for rt in self.models.values():
            if rt.missing:
                self._check_weights(rt)  # progress, or the download has completed
        devices = await asyncio.to_thread(self.memory.devices)
        models = list(self.models.values())
        ledger = [self._ledger_row(d, models) for d in devices]
        return {
            "revision": self.registry_revision,
            "device": self.config.device,
            "memory": {"total_gb": round(sum(d["total_gb"] for d in ledger), 2),
                       "used_by_models_gb": round(sum(d["booked_gb"] for d in ledger), 2),
                       "free_gb": round(sum(d["room_gb"] for d in ledger), 2)},
            "devices": ledger,
            "models": self._views(),
        }

    async def metrics_snapshot(self) -> dict[str, Any]:
        await self._ready()
        await self.routers.read_usage(self.models)
        return {"models": self._views(), **self.counters.public()}

    def _views(self) -> list[ModelView]:
        now = self.clock()
        return [rt.view(now) for rt in self.models.values()]

    async def load(self, model_id: str) -> dict[str, Any]:
        """Load now (llama.cpp's /models/load); returns at once with the model's view."""
        await self._ready()
        rt = self.models.get(model_id)
        if rt is None or not rt.entry.serve:
            return {"outcome": Outcome.UNKNOWN if rt is None else Outcome.NOT_SERVED}
        self._check_weights(rt)
        if rt.missing:
            return self._answer(Outcome.DOWNLOADING, rt)
        if rt.state in (State.UNLOADED, State.FAILED):
            self._start_load(rt)
        await self._pushed()
        return self._answer(Outcome.OK, rt)

    async def unload(self, model_id: str) -> dict[str, Any]:
        """Unload now (llama.cpp's /models/unload), even if pinned; waits until it is gone."""
        await self._ready()
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": Outcome.UNKNOWN}
        await self._unload(rt, "manual")
        await self._pushed()
        return self._answer(Outcome.OK, rt)

    async def cluster(self) -> dict[str, Any]:
        """Ray Serve's applications and their health."""
        return await asyncio.to_thread(self.apps.cluster)

    async def replica_pids(self, model_id: str) -> list[int]:
        rt = self.models.get(model_id)
        return list(rt.pids) if rt is not None and rt.state == State.READY else []

    # --- helpers -------------------------------------------------------------------------
    def _set(self, rt: Runtime, state: State) -> None:
        check(rt.state, state)
        rt.state, rt.since = state, self.clock()
        if state not in admission.COMING:
            rt.admitted = False  # loaded (then it holds its memory) or not loading any more
        if state in (State.UNLOADED, State.FAILED):
            rt.placement = None  # its devices are free of it
        self._publish()

    def _publish(self) -> None:
        """Push every model's view to the routers soon: one push for the changes of one moment
        (each router answers /v1/models from the last one it got)."""
        if self._publishing:
            return
        self._publishing = True

        async def push() -> None:
            self._publishing = False
            await self.routers.publish(self._views())

        try:
            self._push = self._spawn(push(), "publish")
        except RuntimeError:  # no running loop (a test's synchronous set-up): the next change pushes
            self._publishing = False

    async def _pushed(self) -> None:
        """The routers have the views of the changes made so far (before a caller's answer, so that
        /v1/models agrees with what load, unload or reconcile just did)."""
        while self._push is not None and not self._push.done():
            await asyncio.shield(self._push)

    def _event(self, kind: str, rt: Runtime | None, **data: Any) -> None:
        """Record an event (of a model, or with ``rt`` None of something else, e.g. a node)."""
        try:
            self.events.record(kind, **({"model": rt.entry.id} if rt is not None else {}), **data)
        except OSError as exc:  # the log is a record, not a reason to fail a load
            log.warning("could not write event %s: %s", kind, exc)

    def _loop_failed(self, name: str) -> None:
        self.counters.count(self.counters.loop_errors, name)

    def _spawn(self, coro, what: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)

        def done(finished: asyncio.Task) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background %s failed", what, exc_info=finished.exception())
                self._loop_failed(what)

        task.add_done_callback(done)
        return task
