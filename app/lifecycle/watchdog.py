"""The watchdog's rule: has a READY model's replica or engine died (pure, plus a process probe).

The manager checks every READY model each ``watch_interval_s`` against one Serve snapshot and the
processes it recorded when the model became ready. A crash is a state change the manager owns
(RESTARTING, an event, a counter, a reload through admission), not something Serve repairs
behind its back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psutil

from app.engines.serve_apps import AppInfo, last_line
from app.lifecycle.runtime import Process, Runtime


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
    """The process runs (and is the one recorded: a reused pid has another start time)."""
    try:
        found = psutil.Process(proc.pid)
        return abs(found.create_time() - proc.create_time) < 1.0 and found.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
