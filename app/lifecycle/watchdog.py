"""The watchdog: has a READY model's replica or engine died (the rule, pure), and what the manager
does about it (``Watching``, mixed into ``ModelManager``).

The manager checks every READY model each ``watch_interval_s`` against one Serve snapshot and the
processes it recorded when the model became ready. A crash is a state change the manager owns
(RESTARTING, an event, a counter, a reload through admission), not something Serve repairs
behind its back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.cluster.agent import process_alive
from app.engines.engine_logs import last_error_line
from app.engines.llm_config import app_name
from app.engines.serve_apps import AppInfo, last_line
from app.lifecycle.runtime import Process, Runtime
from app.lifecycle.states import State

log = logging.getLogger("llmbox.manager")
EXIT_REPORT_TRIES = 5  # polls (poll_interval_s apart) for a crashed engine's exit code


@dataclass(frozen=True)
class Crash:
    process: str  # "engine", "replica" or "application" (Serve's view)
    pid: int | None
    detail: str


def find_crash(rt: Runtime, app: AppInfo | None, alive: Callable[[Process], bool]) -> Crash | None:
    """What died, if anything: the application, the replica or an engine process."""
    if app is None:
        return Crash("application", None, "its Serve application is gone")
    if app.status != "RUNNING":
        return Crash("application", None, f"Serve reports it {app.status}: {last_line(app.message)}")
    for proc in rt.processes:  # the replica first: its engines die with it
        if not alive(proc):
            return Crash(proc.role, proc.pid, f"{proc.role} process {proc.name} exited")
    running = {r.pid for r in app.replicas() if r.state == "RUNNING"}
    if rt.pids and not set(rt.pids) & running:
        return Crash("replica", rt.pids[0], "Serve replaced its replica")
    return None


def alive(proc: Process) -> bool:
    """The process runs on this machine (and is the one recorded: a reused pid has another start time)."""
    return process_alive(proc.pid, proc.create_time)


class Watching:
    """The manager's side of the watchdog (its state lives in ``ModelManager``)."""

    async def watch_once(self) -> None:
        """Check every READY model's application, replica and engine processes; drop dead routers."""
        await self._watch_models(list(self.models.values()), prune_routers=True)

    async def _watch_models(self, models: list[Runtime], prune_routers: bool = False) -> None:
        await self.check_nodes()  # a model whose node is gone is unloaded, not restarted where it was
        taken, mark = self.clock(), self._next_ticket
        snapshot = await asyncio.to_thread(self.apps.snapshot)
        if prune_routers:
            self.routers.forget_dead(self.models.values(), self.routers.discover(snapshot), mark)
        watched = [rt for rt in models if rt.state == State.READY and not rt.lock.locked() and rt.since <= taken]
        alive = await asyncio.to_thread(self._liveness, watched)
        for rt in watched:
            if rt.state != State.READY or rt.lock.locked():
                continue  # a load or unload in progress owns it; or it became ready after the snapshot
            crash = find_crash(rt, snapshot.get(app_name(rt.entry.id)), alive)
            if crash is not None:
                self._crashed(rt, crash)

    def _liveness(self, models: list[Runtime]) -> Callable[[Process], bool]:
        """Whether a model's process lives: asked on its node (its agent) in a cluster, else here.
        A node whose agent cannot answer counts as alive: whether the node is lost, the node check decides."""
        ask = getattr(self.memory, "alive", None)
        if ask is None:
            return self.alive
        by_node: dict[str, list[Process]] = {}
        for rt in models:
            by_node.setdefault(rt.placement.node if rt.placement else "", []).extend(rt.processes)
        dead: set[Process] = set()
        for node, procs in by_node.items():
            answer = ask(node, [(p.pid, p.create_time) for p in procs])
            if answer is not None:
                dead.update(p for p, up in zip(procs, answer) if not up)
        return lambda proc: proc not in dead

    def _crashed(self, rt: Runtime, crash: Crash) -> None:
        """A READY model's engine or replica died: RESTARTING at once (so no request is sent to it
        again), then its reload, which first records the crash and removes what is left of it."""
        self._set(rt, State.RESTARTING)
        rt.tickets.clear()  # the requests in flight died with it
        rt.loader = self._spawn(self._load(rt, crash), "restart")

    async def _engine_exit(self, model_id: str) -> dict[str, Any] | None:
        """The replica's report on its dead engine: the exit code shows once the replica has
        reaped it (measured: ~0.4 s after a kill -9; the watchdog may notice sooner, at its next tick)."""
        info = None
        for _ in range(EXIT_REPORT_TRIES):
            info = await self._engine_info(model_id)
            if info is None or info.get("exited"):
                break
            await asyncio.sleep(self.config.poll_interval_s)
        return info

    async def _record_crash(self, rt: Runtime, crash: Crash) -> bool:
        """Event, counter, the crash's cause, and Serve's app deleted; False after too many crashes."""
        await self._revoke(rt)  # close the routers' fast path first (best effort: a silent one heals itself)
        info = await self._engine_exit(rt.entry.id) if crash.process == "engine" else None
        exited = ((info or {}).get("exited") or [{}])[0]
        last_error = (info or {}).get("last_error") or await asyncio.to_thread(last_error_line, rt.log_path)
        now = self.clock()
        rt.crashes.append(now)
        while rt.crashes and rt.crashes[0] < now - self.config.crash_window_s:
            rt.crashes.popleft()
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
        rt.processes = []
        if len(rt.crashes) < self.config.crash_limit:
            return True
        rt.failures += 1
        rt.last_error = (f"crashed {len(rt.crashes)} times within {self.config.crash_window_s / 60:.0f} "
                         f"minutes; last: {rt.last_error}")
        self._set(rt, State.FAILED)
        self.counters.count(self.counters.loads, (rt.entry.id, "failed"))
        self._event("model_load_failed", rt, reason=rt.last_error)
        return False
