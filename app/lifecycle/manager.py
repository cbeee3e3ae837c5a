"""The model manager: the single owner of model residency (one named, detached Ray actor).

Everything that changes a model's state funnels through here, on one asyncio loop, so two
requests can never start two loads of one model. The router asks ``acquire`` before it forwards
a request and ``release`` after; the reaper and eviction never touch a model with a request in
flight. Serve executes what the manager decides (deploy / delete one application per model).

For a ready model the router skips ``acquire`` under a lease (see ``app/serving/leases.py``)
and counts those requests itself: the manager reads the routers' counts when it needs them and
revokes their leases before any unload, then decides on fresh numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engines.llm_config import EngineHost, llm_config_dict
from app.engines.sources import NotDownloaded, SourceMissing, is_hub, resolve
from app.events import EventLog
from app.hub import paths
from app.gpu.memory import CpuBudget, MemoryProbe, NvmlMemory
from app.lifecycle.states import State, check
from app.registry.schema import ModelEntry, Registry
from app.registry.store import RegistryStore
from app.serving import model_apps

log = logging.getLogger("llmbox.manager")

ACTOR_NAME = "llmbox-manager"
NAMESPACE = "llmbox"
DEFAULT_NEED_GB = 4.0  # memory assumed for a model with neither a measurement nor an estimate
BACKOFF_S = (5, 15, 60, 300)  # wait before retrying a failed load: 1st, 2nd, 3rd, later failures
ROUTER_TIMEOUT_S = 5.0  # a router that does not answer in time is taken to have nothing in flight


@dataclass
class ManagerConfig:
    """What the manager needs from the settings (plain data: it crosses into a Ray actor)."""

    registry_path: str
    device: str
    cache_dir: str
    models_dir: str
    state_dir: str  # download records and the event log
    cpu_memory_budget_gb: float | None = None
    load_timeout_s: float = 600.0
    reaper_interval_s: float = 1.0


@dataclass
class Runtime:
    """What the manager knows about one model (the registry entry says what it should be)."""

    entry: ModelEntry
    idle_timeout_s: int
    state: State = State.UNLOADED
    since: float = field(default_factory=time.time)  # when the state last changed
    in_flight: int = 0  # requests counted in by acquire
    router_in_flight: int = 0  # requests on the routers' fast path, as last read from them
    lease: int = 0  # the lease number the routers get with "ready" (renewed at each revocation)
    last_used: float | None = None
    last_error: str | None = None
    last_load_s: float | None = None
    memory_gb: float | None = None  # measured after the last load
    pids: list[int] = field(default_factory=list)  # its replica processes (engines are their children)
    failures: int = 0
    config_key: str = ""  # the engine config it was loaded with
    missing: str | None = None  # why its weights are not servable yet (not downloaded), else None
    download: dict[str, Any] | None = None  # the download record while weights are missing
    pin_pending: bool = False  # always-on, waiting for its download: load when it completes
    loader: asyncio.Task | None = None  # the load in progress (single flight)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one load/unload at a time

    def loading(self) -> bool:
        return self.loader is not None and not self.loader.done()

    def public(self) -> dict[str, Any]:
        now = time.time()
        view = {
            "id": self.entry.id,
            "task": self.entry.task,
            "source": self.entry.source,
            "serve": self.entry.serve,
            "always_on": self.entry.always_on,
            "state": self.display_state(),
            "since": self.since,
            "in_flight": self.in_flight + self.router_in_flight,
            "last_used": self.last_used,
            "idle_timeout_s": self.idle_timeout_s,
            "memory_gb": self.memory_gb if self.memory_gb is not None else self.entry.memory_gb,
            "memory_measured": self.memory_gb is not None,
            "last_load_s": self.last_load_s,
            "last_error": self.last_error,
            "pids": self.pids if self.state == State.READY else [],
        }
        if self.state == State.LOADING:
            view["loading"] = {"state": "loading", "elapsed_s": round(now - self.since, 1),
                               "expected_s": self.last_load_s}
        if self.state == State.FAILED:
            view["retry_in_s"] = max(0.0, round(self.since + self.backoff_s() - now, 1))
        if self.missing:
            view["missing"] = self.missing
            view["download"] = self.download
        return view

    def display_state(self) -> str:
        """The residency state, or ``downloading`` / ``not_downloaded`` while the weights are absent."""
        if self.missing and self.state in (State.UNLOADED, State.FAILED):
            running = self.download and self.download.get("state") in ("queued", "running")
            return "downloading" if running else "not_downloaded"
        return self.state.value

    def busy(self) -> bool:
        return self.in_flight + self.router_in_flight > 0

    def idle_for(self, now: float) -> float:
        """Seconds since its last use, or since it (re)loaded if that came later: a use before an
        unload must not make a model that has just loaded again look idle."""
        return now - max(self.last_used or 0.0, self.since)

    def backoff_s(self) -> float:
        return BACKOFF_S[min(self.failures, len(BACKOFF_S)) - 1] if self.failures else 0.0


class Metrics:
    """Counters the router exposes on /metrics (Prometheus)."""

    def __init__(self) -> None:
        self.loads: dict[tuple[str, str], int] = {}  # (model, result) -> count
        self.unloads: dict[tuple[str, str], int] = {}  # (model, reason) -> count
        self.load_seconds: dict[str, list[float]] = {}  # model -> [sum, count]
        self.queue_wait: dict[str, list[float]] = {}  # model -> [sum, count]

    def count(self, table: dict, key: tuple[str, str]) -> None:
        table[key] = table.get(key, 0) + 1

    @staticmethod
    def observe(table: dict, model: str, value: float) -> None:
        total = table.setdefault(model, [0.0, 0])
        total[0] += value
        total[1] += 1

    def public(self) -> dict[str, Any]:
        return {
            "loads": [[m, r, n] for (m, r), n in self.loads.items()],
            "unloads": [[m, r, n] for (m, r), n in self.unloads.items()],
            "load_seconds": {m: v for m, v in self.load_seconds.items()},
            "queue_wait_seconds": {m: v for m, v in self.queue_wait.items()},
        }


class ModelManager:
    """Run as a Ray actor (see ``spawn``); every public method is called through its handle."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.store = RegistryStore(config.registry_path)
        self.host = EngineHost(device=config.device, cache_dir=Path(config.cache_dir),
                               models_dir=Path(config.models_dir))
        self.events = EventLog(Path(config.state_dir) / "events.jsonl")
        self.memory: MemoryProbe = NvmlMemory() if config.device == "gpu" else CpuBudget(config.cpu_memory_budget_gb)
        self.models: dict[str, Runtime] = {}
        self.metrics = Metrics()
        self.registry_revision = -1
        self.routers: set[tuple[str, str]] = set()  # (Serve app, deployment) of each router
        self._router_handles: dict[tuple[str, str], Any] = {}
        self._lease_numbers = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._started = False

    # --- start-up and registry ---------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Read the registry, load always-on models, start the reaper (idempotent)."""
        result = await self.reconcile()
        if not self._started:
            self._started = True
            self._spawn(self._reap_forever())
        return result

    async def reconcile(self) -> dict[str, Any]:
        """Apply the registry: new models appear, removed or unserved ones unload, changed ones reload."""
        registry = await asyncio.to_thread(self.store.read)
        self.registry_revision = registry.revision
        actions: dict[str, str] = {}
        wanted = {m.id: m for m in registry.models}
        for model_id in list(self.models):
            if model_id not in wanted:
                actions[model_id] = "removed"
                await self._unload(self.models[model_id], "reconcile")
                del self.models[model_id]
        for entry in registry.models:
            actions[entry.id] = await self._apply_entry(entry, registry)
        return {"revision": registry.revision, "actions": actions}

    async def _apply_entry(self, entry: ModelEntry, registry: Registry) -> str:
        rt = self.models.get(entry.id)
        if rt is None:
            rt = self.models[entry.id] = Runtime(entry=entry, idle_timeout_s=registry.idle_timeout_s(entry))
            known = self._measurements().get(entry.id)
            if known and known.get("source") == entry.source:  # measured before a restart of the box
                rt.memory_gb, rt.last_load_s = known.get("memory_gb"), known.get("load_s")
        changed = rt.config_key and rt.config_key != self._config_key(entry)
        rt.entry, rt.idle_timeout_s = entry, registry.idle_timeout_s(entry)
        self._check_weights(rt)
        if not entry.serve:
            if rt.state in (State.READY, State.LOADING, State.FAILED):
                await self._unload(rt, "reconcile")
                return "unloaded (serve: false)"
            return "not served"
        if changed and rt.state == State.READY:
            await self._unload(rt, "reconcile")
            self._start_load(rt)
            return "reloading (engine settings changed)"
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
        path = paths.record_path(Path(self.config.state_dir), entry.source, entry.revision)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        keys = ("state", "percent", "bytes_done", "bytes_total", "rate_bps", "eta_s", "error")
        return {k: record.get(k) for k in keys}

    def _config_key(self, entry: ModelEntry) -> str:
        try:
            return json.dumps(llm_config_dict(entry, self.host), sort_keys=True)
        except SourceMissing as exc:
            return f"missing: {exc}"

    # --- what the router calls -------------------------------------------------------------
    async def acquire(self, model_id: str) -> dict[str, Any]:
        """Count a request in and make sure its model is (being) loaded.

        Returns ``{"outcome": ..., "model": {...}}`` with outcome ``ready``, ``loading`` (the
        request is counted in: call ``release`` when done), ``failed``, ``unknown`` or
        ``not_served`` (not counted in).
        """
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": "unknown"}
        if not rt.entry.serve:
            return {"outcome": "not_served", "model": rt.public()}
        if rt.missing:
            self._check_weights(rt)
            if rt.missing:
                return {"outcome": "downloading", "model": rt.public()}
        if rt.state == State.FAILED and time.time() < rt.since + rt.backoff_s():
            return {"outcome": "failed", "model": rt.public()}
        rt.in_flight += 1
        rt.last_used = time.time()
        if rt.state == State.READY:
            return {"outcome": "ready", "model": rt.public(), "lease": rt.lease}
        if rt.state in (State.UNLOADED, State.FAILED, State.UNLOADING):
            self._start_load(rt)
        return {"outcome": "loading", "model": rt.public()}

    async def wait(self, model_id: str, timeout_s: float, queued_at: float) -> dict[str, Any]:
        """Wait until the model's load ends (or ``timeout_s``); returns the model's view.

        ``queued_at`` is when the waiting request arrived: its queue wait is recorded once ready.
        """
        rt = self.models[model_id]
        if rt.loading() or rt.state in (State.LOADING, State.UNLOADING):
            try:
                await asyncio.wait_for(self._until_settled(rt), timeout_s)
            except asyncio.TimeoutError:
                pass
        view = rt.public()
        if rt.state == State.READY:
            self.metrics.observe(self.metrics.queue_wait, model_id, time.time() - queued_at)
        return view

    async def release(self, model_id: str) -> None:
        """A request counted in by ``acquire`` has finished (or given up)."""
        rt = self.models.get(model_id)
        if rt is not None:
            rt.in_flight = max(0, rt.in_flight - 1)
            rt.last_used = time.time()

    async def attach_router(self, app: str, deployment: str) -> None:
        """A router replica has started: include it in usage reads and lease revocations."""
        self.routers.add((app, deployment))

    async def status(self) -> dict[str, Any]:
        """A snapshot of every model, the memory picture and the registry revision."""
        await self._read_usage()
        for rt in self.models.values():
            if rt.missing:
                self._check_weights(rt)  # progress, or the download has completed
        used = self._used_gb()
        return {
            "revision": self.registry_revision,
            "device": self.config.device,
            "memory": {"total_gb": round(self.memory.total_gb(), 2), "used_by_models_gb": round(used, 2),
                       "free_gb": round(self.memory.free_gb(used), 2)},
            "models": [rt.public() for rt in self.models.values()],
        }

    async def metrics_snapshot(self) -> dict[str, Any]:
        await self._read_usage()
        return {"models": [rt.public() for rt in self.models.values()], **self.metrics.public()}

    async def load(self, model_id: str) -> dict[str, Any]:
        """Load now (llama.cpp's /models/load); returns at once with the model's view."""
        rt = self.models.get(model_id)
        if rt is None or not rt.entry.serve:
            return {"outcome": "unknown" if rt is None else "not_served"}
        self._check_weights(rt)
        if rt.missing:
            return {"outcome": "downloading", "model": rt.public()}
        if rt.state in (State.UNLOADED, State.FAILED):
            self._start_load(rt)
        return {"outcome": "ok", "model": rt.public()}

    async def unload(self, model_id: str) -> dict[str, Any]:
        """Unload now (llama.cpp's /models/unload), even if pinned; waits until it is gone."""
        rt = self.models.get(model_id)
        if rt is None:
            return {"outcome": "unknown"}
        await self._unload(rt, "manual")
        return {"outcome": "ok", "model": rt.public()}

    async def cluster(self) -> dict[str, Any]:
        """Ray Serve's applications and their health."""
        return await asyncio.to_thread(model_apps.cluster)

    async def replica_pids(self, model_id: str) -> list[int]:
        return await asyncio.to_thread(model_apps.replica_pids, model_id)

    # --- loading -------------------------------------------------------------------------
    def _start_load(self, rt: Runtime) -> None:
        if rt.loading():
            return  # single flight: the running load serves every waiter
        if rt.state in (State.UNLOADED, State.FAILED):
            self._set(rt, State.LOADING)  # visible at once; behind an unload, _load sets it
        rt.loader = asyncio.get_running_loop().create_task(self._load(rt))

    async def _load(self, rt: Runtime) -> None:
        async with rt.lock:
            if rt.state in (State.UNLOADED, State.FAILED):  # we were queued behind an unload
                self._set(rt, State.LOADING)
            if rt.state != State.LOADING:
                return
            started = time.time()
            model_id = rt.entry.id
            try:
                need = self._need_gb(rt)
                refusal = await self._make_room(rt, need)
                if refusal:
                    rt.last_error = refusal
                    self._set(rt, State.UNLOADED)
                    self.metrics.count(self.metrics.loads, (model_id, "no_memory"))
                    self._event("model_load_refused", rt, reason=refusal)
                    return
                rt.config_key = self._config_key(rt.entry)
                await asyncio.to_thread(model_apps.deploy, rt.entry, self.host)
                error = await self._wait_running(model_id, started)
                if error:
                    await self._fail(rt, error)
                    return
                pids = await asyncio.to_thread(model_apps.replica_pids, model_id)
                rt.memory_gb = round(self.memory.process_gb(pids), 3) if pids else None
                rt.pids = pids
                rt.last_load_s = round(time.time() - started, 2)
                rt.failures, rt.last_error = 0, None
                rt.lease = next(self._lease_numbers)
                self._set(rt, State.READY)
                self.metrics.count(self.metrics.loads, (model_id, "ok"))
                self.metrics.observe(self.metrics.load_seconds, model_id, rt.last_load_s)
                log.info("loaded %s in %.1f s (%.2f GB)", model_id, rt.last_load_s, rt.memory_gb or 0)
                self._event("model_loaded", rt, seconds=rt.last_load_s, memory_gb=rt.memory_gb)
                self._remember(rt)
            except Exception as exc:  # any failure of a load is the model's state, not a crash
                await self._fail(rt, f"{type(exc).__name__}: {exc}")

    async def _wait_running(self, model_id: str, started: float) -> str | None:
        """Poll Serve until the app runs (None) or fails (the reason)."""
        deadline = started + self.config.load_timeout_s
        while True:
            app = await asyncio.to_thread(model_apps.status, model_id)
            if app.status == "RUNNING":
                return None
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                return model_apps.last_line(app.message)
            if "failed to start" in app.message:  # Serve would retry; the manager decides instead
                return model_apps.last_line(app.message)
            if time.time() > deadline:
                return f"load did not finish within {self.config.load_timeout_s:.0f} s"
            await asyncio.sleep(0.5)

    async def _fail(self, rt: Runtime, reason: str) -> None:
        log.warning("load of %s failed: %s", rt.entry.id, reason)
        rt.failures += 1
        rt.last_error = reason
        self._set(rt, State.FAILED)
        self.metrics.count(self.metrics.loads, (rt.entry.id, "failed"))
        self.metrics.count(self.metrics.unloads, (rt.entry.id, "failed"))
        self._event("model_load_failed", rt, reason=reason)
        await asyncio.to_thread(model_apps.delete, rt.entry.id)  # free whatever it holds

    @staticmethod
    async def _until_settled(rt: Runtime) -> None:
        while rt.loading() or rt.state in (State.LOADING, State.UNLOADING):
            await asyncio.sleep(0.05)

    # --- memory: admission and eviction ---------------------------------------------------
    def _need_gb(self, rt: Runtime) -> float:
        return rt.memory_gb or rt.entry.memory_gb or DEFAULT_NEED_GB

    def _used_gb(self, exclude: Runtime | None = None) -> float:
        return sum(self._need_gb(r) for r in self.models.values()
                   if r is not exclude and r.state in (State.READY, State.LOADING, State.UNLOADING))

    async def _make_room(self, rt: Runtime, need: float) -> str | None:
        """Evict idle unpinned models, least valuable first, until ``need`` fits; else the refusal."""
        while True:
            free = self.memory.free_gb(self._used_gb(exclude=rt))
            if need <= free:
                return None
            await self._read_usage()  # who is busy, and when each was last used, as of now
            victims = sorted(
                (r for r in self.models.values()
                 if r is not rt and r.state == State.READY and not r.entry.always_on and not r.busy()),
                key=self._value,
            )
            if not victims:
                busy = [r.entry.id for r in self.models.values() if r.state == State.READY and r is not rt]
                return (f"not enough memory for {rt.entry.id!r}: needs {need:.1f} GB, {max(free, 0):.1f} GB free "
                        f"of {self.memory.total_gb():.1f} GB; loaded and busy or pinned: {', '.join(busy) or 'none'}")
            log.info("evicting %s to make room for %s", victims[0].entry.id, rt.entry.id)
            await self._unload(victims[0], "evicted")

    @staticmethod
    def _value(rt: Runtime) -> float:
        """How much keeping a model is worth: what reloading costs, per second it sat idle."""
        idle = max(rt.idle_for(time.time()), 1.0)
        reload_cost = rt.last_load_s or 30.0
        return reload_cost / idle

    # --- unloading and the reaper -----------------------------------------------------------
    async def _unload(self, rt: Runtime, reason: str) -> None:
        if rt.loading():
            await asyncio.wait([rt.loader])  # let the load finish; then unload what it loaded
        async with rt.lock:
            if rt.state == State.FAILED:
                self._set(rt, State.UNLOADED)
                return
            if rt.state != State.READY:
                return
            await self._revoke(rt)  # from here on every new request comes through acquire
            if reason in ("idle", "evicted") and rt.busy():
                return  # a request arrived since the decision; no await separates this check from the state change
            if reason == "idle" and not self._idle(rt, time.time()):
                return  # the routers had used it since the reaper looked
            self._set(rt, State.UNLOADING)
            try:
                await asyncio.to_thread(model_apps.delete, rt.entry.id)
            finally:
                self._set(rt, State.UNLOADED)  # memory_gb stays: it sizes the next admission
            self.metrics.count(self.metrics.unloads, (rt.entry.id, reason))
            log.info("unloaded %s (%s)", rt.entry.id, reason)
            self._event("model_unloaded", rt, reason=reason)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reaper_interval_s)
            now = time.time()
            for rt in list(self.models.values()):
                if rt.pin_pending and rt.state == State.UNLOADED:
                    self._check_weights(rt)
                    if not rt.missing and rt.entry.serve and rt.entry.always_on:
                        rt.pin_pending = False
                        self._start_load(rt)  # its download has just completed
                if self._idle(rt, now, routers_too=False) and await self._still_idle(rt):
                    self._spawn(self._unload(rt, "idle"))  # which revokes the routers' lease first

    @staticmethod
    def _idle(rt: Runtime, now: float, routers_too: bool = True) -> bool:
        """Reapable: ready, not pinned, nothing in flight, unused for longer than its idle timeout.

        ``routers_too=False`` leaves out the routers' in-flight count, which may be stale.
        """
        in_flight = rt.in_flight + (rt.router_in_flight if routers_too else 0)
        return (rt.state == State.READY and not rt.entry.always_on and in_flight == 0
                and rt.idle_timeout_s > 0 and rt.idle_for(now) > rt.idle_timeout_s)

    async def _still_idle(self, rt: Runtime) -> bool:
        """Idle by the manager's numbers: check the routers' (one call, only for a candidate)."""
        await self._read_usage()
        return self._idle(rt, time.time())

    # --- the routers' fast path ------------------------------------------------------------
    async def _ask_routers(self, method: str, *args: Any) -> list[dict[str, Any]]:
        """Call ``method`` on every router; a router that fails or is too slow is left out."""
        from ray import serve

        answers = []
        for app, deployment in list(self.routers):
            try:
                handle = self._router_handles.get((app, deployment))
                if handle is None:  # once per router: status and the reaper ask often
                    handle = self._router_handles[(app, deployment)] = serve.get_deployment_handle(
                        deployment, app_name=app)
                answers.append(await asyncio.wait_for(getattr(handle, method).remote(*args), ROUTER_TIMEOUT_S))
            except Exception as exc:  # noqa: BLE001 - a missing router has nothing in flight
                log.warning("router %s did not answer %s: %s", app, method, exc)
                if app not in await asyncio.to_thread(model_apps.app_names):
                    self.routers.discard((app, deployment))  # deleted: stop asking it
                    self._router_handles.pop((app, deployment), None)
        return answers

    async def _read_usage(self) -> None:
        """Take the routers' fast-path counts: requests in flight and last use per model."""
        if not self.routers:
            return
        merged: dict[str, list] = {}
        for usage in await self._ask_routers("usage"):
            for model_id, u in usage.items():
                total = merged.setdefault(model_id, [0, None])
                total[0] += u["in_flight"]
                total[1] = max(total[1] or 0, u["last_used"] or 0) or None
        for model_id, rt in self.models.items():
            in_flight, last_used = merged.get(model_id, (0, None))
            self._take_usage(rt, in_flight, last_used)

    async def _revoke(self, rt: Runtime) -> None:
        """End the routers' lease on this model and take their counts (just before an unload)."""
        number, rt.lease = rt.lease, next(self._lease_numbers)
        answers = await self._ask_routers("revoke", rt.entry.id, number)
        self._take_usage(rt, sum(a["in_flight"] for a in answers),
                         max((a["last_used"] or 0 for a in answers), default=0) or None)

    @staticmethod
    def _take_usage(rt: Runtime, in_flight: int, last_used: float | None) -> None:
        rt.router_in_flight = in_flight
        if last_used and last_used > (rt.last_used or 0):
            rt.last_used = last_used

    # --- helpers -------------------------------------------------------------------------
    def _set(self, rt: Runtime, state: State) -> None:
        check(rt.state, state)
        rt.state, rt.since = state, time.time()

    def _measurements(self) -> dict[str, Any]:
        try:
            return json.loads((Path(self.config.state_dir) / "measurements.json").read_text())
        except (OSError, ValueError):
            return {}

    def _remember(self, rt: Runtime) -> None:
        """Keep what a load measured across restarts: it sizes admission and fit estimates."""
        data = self._measurements()
        data[rt.entry.id] = {"source": rt.entry.source, "memory_gb": rt.memory_gb, "load_s": rt.last_load_s,
                             "time": round(time.time(), 1)}
        path = Path(self.config.state_dir) / "measurements.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(".measurements.json.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not save measurements: %s", exc)

    def _event(self, kind: str, rt: Runtime, **data: Any) -> None:
        try:
            self.events.record(kind, model=rt.entry.id, **data)
        except OSError as exc:  # the log is a record, not a reason to fail a load
            log.warning("could not write event %s: %s", kind, exc)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._tasks.discard)


def spawn(config: ManagerConfig):
    """Create (or find) the detached manager actor and return its handle."""
    import ray

    actor = ray.remote(ModelManager).options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=1000,
    )
    return actor.remote(config)


def handle():
    """The running manager actor."""
    import ray

    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
