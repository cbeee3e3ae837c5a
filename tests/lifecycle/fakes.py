"""Stand-ins for the manager's injected parts: Serve (the executor), the clock, a router.

Serve itself cannot be made fast (an application takes seconds to start), so decision tests use
FakeServe, which has the functions of app/engines/serve_apps.py and answers from memory. The
real thing is exercised by tests/serving and tests/chaos. The router stand-in uses the real
``Leases`` class, reached in-process instead of through a Serve handle.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from pathlib import Path

from app.engines.llm_config import app_name
from app.engines.serve_apps import AppInfo, Replica
from app.lifecycle.manager import ModelManager
from app.lifecycle.routers import ROUTER_DEPLOYMENT, RouterLink
from app.lifecycle.runtime import ManagerConfig
from app.registry.store import RegistryStore
from app.serving.leases import Leases

ENTRY = "    - id: {id}\n      source: /srv/models/{id}\n      serve: true\n      memory_gb: 2\n{extra}"


def models(*ids: str, extra: str = "") -> str:
    return "".join(ENTRY.format(id=i, extra=extra) for i in ids)


class FakeClock:
    """Wall-clock time that moves only when told (it starts at the real time: the routers' Leases,
    which the manager compares it with, stamp uses with the real clock)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeServe:
    """Applications 'start' after ``polls`` status polls, or fail if listed in ``failing``."""

    def __init__(self, polls: int = 1, failing=()) -> None:
        self.polls, self.failing = polls, set(failing)
        self.apps: dict[str, dict] = {}  # model id -> {polls, key, pid}
        self.deploys: list[str] = []
        self.deletes: list[str] = []
        self.keys: list[str] = []  # the config key of each deploy
        self.configs: dict[str, dict] = {}  # the last engine config deployed per model
        self.infeasible: dict[str, str] = {}  # Ray cannot place these (model -> why)
        self.unhealthy: set[str] = set()  # Serve reports these UNHEALTHY
        self.exited: dict[str, list[dict]] = {}  # what a replica reports of its dead engine
        self.routers: dict[str, list[str]] = {}  # router app -> live replica ids
        self.delete_gate: threading.Event | None = None  # when set up, delete() waits for it
        self.delete_error: set[str] = set()  # delete() raises for these
        self._pids = itertools.count(5000, 10)

    def deploy(self, model_id: str, config: dict, key: str, placement=None) -> None:
        self.deploys.append(model_id)
        self.keys.append(key)
        self.configs[model_id] = config
        self.apps[model_id] = {"polls": 0, "need": self.polls, "key": key, "placement": placement,
                               "pid": next(self._pids)}

    def delete(self, model_id: str) -> None:
        if model_id in self.delete_error:
            raise RuntimeError(f"Serve could not delete {model_id}")
        if self.delete_gate is not None:
            self.delete_gate.wait(10)
        self.deletes.append(model_id)
        self.apps.pop(model_id, None)

    def status(self, model_id: str) -> AppInfo:
        if model_id in self.failing:
            return AppInfo("DEPLOY_FAILED", "A replica failed to start.\nTraceback (most recent call last):\n"
                           '  File "x.py", line 1\n\x1b[31mRuntimeError: weights not found\x1b[0m')
        app = self.apps.get(model_id)
        if app is None:
            return AppInfo("NOT_STARTED", "")
        app["polls"] += 1
        return AppInfo("RUNNING" if app["polls"] >= app["need"] else "DEPLOYING", "")

    def snapshot(self) -> dict[str, AppInfo]:
        apps = {}
        for model_id, app in self.apps.items():
            running = app["polls"] >= app["need"]
            status = "UNHEALTHY" if model_id in self.unhealthy else ("RUNNING" if running else "DEPLOYING")
            apps[app_name(model_id)] = AppInfo(status, "replica unhealthy" if model_id in self.unhealthy else "",
                                               {"model": [Replica(f"r{app['pid']}", "RUNNING", app["pid"])]})
        for name, ids in self.routers.items():
            apps[name] = AppInfo("RUNNING", "", {ROUTER_DEPLOYMENT: [Replica(i, "RUNNING", 1) for i in ids]})
        return apps

    def engine_info(self, model_id: str) -> dict:
        pid = self.apps[model_id]["pid"]
        return {"pid": pid, "create_time": 1.0, "log": None, "exited": self.exited.get(model_id, []),
                "processes": [{"pid": pid + 1, "name": "VLLM::EngineCore", "create_time": 1.0}],
                "last_error": "EngineDeadError: EngineCore died" if self.exited.get(model_id) else None,
                "endpoint": {"host": "127.0.0.1", "port": 9}}

    def deployed(self, model_id: str):
        app = self.apps.get(model_id)
        return (app["key"], app["placement"]) if app else None

    def cluster(self) -> dict:
        return {"proxies": {}, "applications": {}}

    def unplaceable(self, model_id: str) -> str | None:
        return self.infeasible.get(model_id)

    def replace_replica(self, model_id: str) -> None:
        """What Serve does on its own when a replica dies: a new one, with a new pid."""
        self.apps[model_id]["pid"] = next(self._pids)


class FakeRouter:
    """One router replica's side of the lease protocol (the real Leases), optionally silent."""

    def __init__(self, replica_id: str = "rid-1") -> None:
        self.id, self.leases, self.silent = replica_id, Leases(), False
        self.views: list[list[dict]] = []  # what the manager pushed (models_changed), in order

    async def call(self, app: str, method: str, *args):
        if self.silent:
            raise asyncio.TimeoutError("the router did not answer")
        if method == "usage":
            return {"router": self.id, "models": self.leases.usage()}
        if method == "models_changed":
            self.views.append(args[0])
            return {"router": self.id}
        return {"router": self.id, **self.leases.revoke(*args)}


class Dead:
    """The watchdog's process probe: every process lives but those listed."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def __call__(self, proc) -> bool:
        return proc.pid not in self.pids


def make_manager(tmp_path: Path, entries: str, serve: FakeServe, clock: FakeClock | None = None,
                 budget_gb: float = 5.0, router: FakeRouter | None = None, dead: Dead | None = None,
                 memory=None, **config) -> ModelManager:
    path = tmp_path / "models.yml"
    entries = entries.replace("source: /srv/", f"source: {tmp_path}/srv/")
    for folder in re.findall(r"source: (/\S+)", entries):  # local weights folders must exist
        Path(folder).mkdir(parents=True, exist_ok=True)
    if not path.exists():
        RegistryStore(path).create("llmbox_registry:\n  revision: 0\n  models:\n" + entries)
    device = config.pop("device", "cpu")
    settings = {"reaper_interval_s": 3600, "watch_interval_s": 3600, "poll_interval_s": 0,
                "model_roots": (str(tmp_path / "srv"),), **config}  # where the local weights folders are
    routers = None
    if router is not None:
        routers = RouterLink(call=router.call, timeout_s=0.2)
        routers.attach("router")
        serve.routers.setdefault("router", [router.id])
    manager = ModelManager(
        ManagerConfig(registry_path=str(path), device=device, cache_dir=str(tmp_path), models_dir=str(tmp_path / "models"),
                      state_dir=str(tmp_path / "var"), cpu_memory_budget_gb=budget_gb, **settings),
        apps=serve, clock=clock or FakeClock(), alive=dead or Dead(), routers=routers, memory=memory)
    if memory is None:
        manager.memory.process_gb = lambda pids, node="": 2.0  # what each loaded model measures
    return manager


async def use(manager: ModelManager, model_id: str, router: str = "") -> str:
    """One request: acquire, wait for the model, release; returns the state it ended with."""
    got = await manager.acquire(model_id, router)
    state = got.get("model", {}).get("state")
    if got["outcome"] == "pending":
        state = (await manager.wait(model_id, 30, manager.clock()))["model"]["state"]
    if "ticket" in got:
        await manager.release(model_id, got["ticket"])
    return state


async def lease(manager: ModelManager, router: FakeRouter, model_id: str) -> None:
    """What a router does with its first request to a ready model: acquire, take the lease, release."""
    got = await manager.acquire(model_id, router.id)
    assert got["outcome"] == "ready", got
    router.leases.grant(model_id, got["lease"])
    await manager.release(model_id, got["ticket"])


def states(manager: ModelManager) -> dict[str, str]:
    return {m: rt.state.value for m, rt in manager.models.items()}


async def settle(manager: ModelManager) -> None:
    """Let every load, unload and restart the manager started run to its end (not its loops)."""
    while work := [t for t in manager._tasks if t.get_name() not in ("reaper", "watchdog")]:
        await asyncio.gather(*work, return_exceptions=True)
