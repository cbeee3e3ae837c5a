"""What the model manager knows about each model, its settings, and the view it shows of a model.

Plain data and small predicates; the manager (``manager.py``) is the only code that changes them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypedDict

from app.engines.llm_config import Placement
from app.gpu.footprint import GIB, Budget
from app.lifecycle.states import PENDING, State
from app.registry.schema import ModelEntry

DEFAULT_NEED_GB = 4.0  # memory assumed for a model with neither a measurement nor an estimate
BACKOFF_S = (5, 15, 60, 300)  # wait before retrying a failed load: 1st, 2nd, 3rd, later failures
DIRECT = ""  # the "router" of requests counted in by anything but a router (tests, tools): never pruned


@dataclass
class ManagerConfig:
    """What the manager needs from the settings (plain data: it crosses into a Ray actor)."""

    registry_path: str
    device: str
    cache_dir: str
    models_dir: str
    state_dir: str  # download records, measurements and the event log
    cpu_memory_budget_gb: float | None = None
    model_roots: tuple[str, ...] = ()  # LLMBOX_MODEL_ROOTS: absolute sources may be there besides models_dir
    allow_remote_code: bool = False  # LLMBOX_ALLOW_REMOTE_CODE (app/engines/host_rules.py)
    load_timeout_s: float = 600.0
    reaper_interval_s: float = 0.5  # an idle model goes at most this late (plus its unload)
    watch_interval_s: float = 1.0  # how often READY models' replicas and engine processes are checked
    poll_interval_s: float = 0.5  # how often a load polls Serve for its application's status
    drain_poll_s: float = 0.2  # how often a drain (or a load waiting for room) looks again
    crash_limit: int = 3  # this many crashes within crash_window_s: FAILED (with the backoff), no reload
    crash_window_s: float = 600.0


@dataclass(frozen=True)
class Process:
    """One process of a loaded model, as the watchdog checks it (the pid plus its start time,
    so a reused pid is not mistaken for the process)."""

    pid: int
    create_time: float
    name: str
    role: str  # "replica" (the Serve replica) or "engine" (one of its vLLM processes)


class ModelView(TypedDict, total=False):
    """A model as the manager shows it (status, /v1/models, the API). Plain data: it crosses Ray
    and becomes JSON, and a restarted manager or router never has to unpickle a class."""

    id: str
    task: str
    source: str
    serve: bool
    always_on: bool
    state: str  # a State value, or downloading / not_downloaded while the weights are absent
    since: float
    in_flight: int
    last_used: float | None
    idle_timeout_s: int
    memory_gb: float | None
    memory_measured: bool
    gpus: list[int]  # the devices it is placed on (GPU indices as NVML numbers them) while booked
    node: str  # the node those devices are on ("" on a single-box probe)
    budget_gb: float | None  # what it is given on each of them (booked), else what it would need
    budget: dict[str, Any] | None  # the estimate from its files (footprint.Budget.as_gb)
    embed_prefixes: dict[str, str]  # embedding models with task prefixes: what the router adds
    last_load_s: float | None
    last_error: str | None
    pids: list[int]
    endpoint: dict[str, Any]  # while READY: where its replica serves vLLM's OpenAI app (host, port)
    loading: dict[str, Any]  # while LOADING or RESTARTING: state, elapsed_s, expected_s
    retry_in_s: float  # while FAILED
    missing: str  # while the weights are not downloaded
    download: dict[str, Any] | None


@dataclass
class Runtime:
    """What the manager knows about one model (the registry entry says what it should be)."""

    entry: ModelEntry
    idle_timeout_s: int
    since: float  # when the state last changed
    state: State = State.UNLOADED
    tickets: dict[int, str] = field(default_factory=dict)  # requests counted in by acquire: ticket -> router
    router_in_flight: dict[str, int] = field(default_factory=dict)  # fast-path requests, per router, as last read
    lease: int = 0  # the lease number the routers get with "ready" (renewed at each revocation)
    last_used: float | None = None
    last_error: str | None = None
    last_load_s: float | None = None
    memory_gb: float | None = None  # measured after the last load (all its devices together)
    budget: Budget | None = None  # estimated from its files at its last load (None: not readable)
    placement: Placement | None = None  # where admission put it and what it booked there
    processes: list[Process] = field(default_factory=list)  # replica + engine processes the watchdog checks
    log_path: str | None = None  # the replica's log (its last error line goes into a crash event)
    endpoint: dict[str, Any] | None = None  # where its replica serves HTTP (app/engines/model_server.py)
    failures: int = 0
    crashes: deque = field(default_factory=deque)  # when its engine crashed (within crash_window_s)
    config_key: str = ""  # the engine config it was (or is being) loaded with
    admitted: bool = False  # loading, and admission has reserved its need
    draining: bool = False  # chosen to make room while busy: new requests wait for its reload
    refused: bool = False  # its last load was refused by admission (the reason is last_error)
    abandon: bool = False  # the load in progress is to stop (unloaded, removed or unserved meanwhile)
    missing: str | None = None  # why its weights are not servable yet (not downloaded), else None
    download: dict[str, Any] | None = None  # the download record while weights are missing
    pin_pending: bool = False  # always-on, waiting for its download: load when it completes
    loader: asyncio.Task | None = None  # the load in progress (single flight)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one load/unload at a time

    @property
    def pids(self) -> list[int]:
        """Its replica processes (engines are their children)."""
        return [p.pid for p in self.processes if p.role == "replica"]

    def loading(self) -> bool:
        return self.loader is not None and not self.loader.done()

    def pending(self) -> bool:
        """A request for it should wait: it loads, restarts, or a load is queued behind an unload."""
        return self.loading() or self.state in PENDING

    def in_flight(self) -> int:
        return len(self.tickets) + sum(self.router_in_flight.values())

    def in_flight_before(self, ticket: int) -> int:
        """Requests in flight that were counted in before ``ticket`` (the ones a drain waits for)."""
        return sum(1 for t in self.tickets if t < ticket) + sum(self.router_in_flight.values())

    def busy(self) -> bool:
        return self.in_flight() > 0

    def idle_for(self, now: float) -> float:
        """Seconds since its last use, or since it (re)loaded if that came later: a use before an
        unload must not make a model that has just loaded again look idle."""
        return now - max(self.last_used or 0.0, self.since)

    def backoff_s(self) -> float:
        return BACKOFF_S[min(self.failures, len(BACKOFF_S)) - 1] if self.failures else 0.0

    def display_state(self) -> str:
        """The residency state, or ``downloading`` / ``not_downloaded`` while the weights are absent."""
        if self.missing and self.state in (State.UNLOADED, State.FAILED):
            running = self.download and self.download.get("state") in ("queued", "running")
            return "downloading" if running else "not_downloaded"
        return self.state.value

    def _estimated_gb(self) -> float | None:
        """Its budget from its files, all devices together (None before a load has read them)."""
        return round(self.budget.per_device * self.budget.tp / GIB, 3) if self.budget else None

    def view(self, now: float) -> ModelView:
        view = ModelView(
            id=self.entry.id, task=self.entry.task, source=self.entry.source, serve=self.entry.serve,
            always_on=self.entry.always_on, state=self.display_state(), since=self.since,
            in_flight=self.in_flight(), last_used=self.last_used, idle_timeout_s=self.idle_timeout_s,
            memory_gb=self.memory_gb if self.memory_gb is not None else self.entry.memory_gb or self._estimated_gb(),
            memory_measured=self.memory_gb is not None, last_load_s=self.last_load_s,
            last_error=self.last_error, pids=self.pids if self.state == State.READY else [],
            gpus=list(self.placement.gpus) if self.placement else [],
            node=self.placement.node if self.placement else "",
            budget_gb=round(self.placement.per_device_gb, 3) if self.placement else None,
            budget=self.budget.as_gb() if self.budget else None,
        )
        if self.state == State.READY and self.endpoint:
            view["endpoint"] = self.endpoint
        if self.entry.embed_prefixes is not None:
            view["embed_prefixes"] = self.entry.embed_prefixes.model_dump()
        if self.state in (State.LOADING, State.RESTARTING):
            view["loading"] = {"state": self.state.value, "elapsed_s": round(now - self.since, 1),
                               "expected_s": self.last_load_s}
        if self.draining:
            view["draining"] = True
        if self.state == State.FAILED:
            view["retry_in_s"] = max(0.0, round(self.since + self.backoff_s() - now, 1))
        if self.missing:
            view["missing"] = self.missing
            view["download"] = self.download
        return view
