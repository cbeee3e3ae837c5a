"""The model manager's decisions, fast: Serve replaced by an in-memory stand-in (FakeServe).

The real thing (Ray Serve + vLLM) is exercised by tests/integration/test_serving.py; here the
manager's own logic is under test: single flight, eviction order, busy models, refusals,
failures with backoff, the idle reaper and reconcile.
"""

import asyncio
import json
import time

import pytest

from app.lifecycle import manager as manager_mod
from app.events import EventLog
from app.hub import paths
from app.lifecycle.manager import ManagerConfig, ModelManager
from app.registry.edits import remove_model, update_model
from app.registry.store import RegistryStore
from app.serving.leases import Leases
from app.serving.model_apps import AppStatus

ENTRY = "    - id: {id}\n      source: /srv/models/{id}\n      serve: true\n      memory_gb: 2\n{extra}"


class FakeServe:
    """Stands in for app.serving.model_apps: apps 'start' after load_s, or fail if listed."""

    def __init__(self, load_s=0.2, failing=()):
        self.load_s, self.failing = load_s, set(failing)
        self.apps: dict[str, float] = {}
        self.deploys: list[str] = []

    def deploy(self, entry, host):
        self.deploys.append(entry.id)
        self.apps[entry.id] = time.monotonic()

    def status(self, model_id):
        if model_id in self.failing:
            return AppStatus("DEPLOY_FAILED", "A replica failed to start.\nRuntimeError: weights not found")
        if model_id not in self.apps:
            return AppStatus("NOT_STARTED", "")
        ready = time.monotonic() - self.apps[model_id] >= self.load_s
        return AppStatus("RUNNING" if ready else "DEPLOYING", "")

    def delete(self, model_id):
        self.apps.pop(model_id, None)

    def replica_pids(self, model_id):
        return [4242] if model_id in self.apps else []


@pytest.fixture
def serve(monkeypatch):
    fake = FakeServe()
    for name in ("deploy", "status", "delete", "replica_pids"):
        monkeypatch.setattr(manager_mod.model_apps, name, getattr(fake, name))
    return fake


def make_manager(tmp_path, entries, budget_gb=5.0, reaper_interval_s=0.1):
    path = tmp_path / "models.yml"
    RegistryStore(path).create("llmbox_registry:\n  revision: 0\n  models:\n" + entries)
    manager = ModelManager(ManagerConfig(registry_path=str(path), device="cpu", cache_dir=str(tmp_path),
                                         models_dir=str(tmp_path / "models"), state_dir=str(tmp_path / "var"),
                                         cpu_memory_budget_gb=budget_gb, reaper_interval_s=reaper_interval_s))
    manager.memory.process_gb = lambda pids: 2.0  # what each loaded model measures
    return manager


def models(*ids, extra=""):
    return "".join(ENTRY.format(id=i, extra=extra) for i in ids)


async def use(manager, model_id):
    """One request: acquire, wait for the model, release; returns the final state."""
    got = await manager.acquire(model_id)
    view = got["model"]
    if got["outcome"] == "loading":
        view = await manager.wait(model_id, 30, time.time())
    await manager.release(model_id)
    return view["state"]


def states(manager):
    return {m: rt.state.value for m, rt in manager.models.items()}


def test_concurrent_requests_share_one_load(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a"))
        await manager.reconcile()
        return manager, await asyncio.gather(*(use(manager, "a") for _ in range(5)))

    manager, results = asyncio.run(scenario())
    assert results == ["ready"] * 5
    assert serve.deploys == ["a"]


def test_the_least_valuable_idle_model_is_evicted_first(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"))  # budget 5 GB fits two of 2 GB
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        await asyncio.sleep(1.2)
        await use(manager, "a")  # a is now the recently used one
        await use(manager, "c")
        return manager

    manager = asyncio.run(scenario())
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}
    assert manager.metrics.unloads == {("b", "evicted"): 1}


def test_a_model_with_a_request_in_flight_is_never_evicted(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"))
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        await manager.acquire("a")  # a request in flight on a, the least recently used...
        await asyncio.sleep(1.2)
        await use(manager, "b")
        return manager, await use(manager, "c")

    manager, state_c = asyncio.run(scenario())
    assert state_c == "ready"
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}  # ...so b went instead


def test_when_nothing_can_be_evicted_the_load_is_refused_with_the_reason(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"))
        await manager.reconcile()
        for model_id in ("a", "b"):
            await use(manager, model_id)
            await manager.acquire(model_id)  # both busy
        return manager, await use(manager, "c")

    manager, state_c = asyncio.run(scenario())
    assert state_c == "unloaded" and "c" not in serve.deploys
    assert "not enough memory for 'c': needs 2.0 GB, 1.0 GB free" in manager.models["c"].last_error
    assert manager.metrics.loads[("c", "no_memory")] == 1


def test_a_failed_load_reports_the_engine_error_and_backs_off(tmp_path, serve):
    serve.failing.add("a")

    async def scenario():
        manager = make_manager(tmp_path, models("a"))
        await manager.reconcile()
        first = await use(manager, "a")
        again = await manager.acquire("a")
        return manager, first, again

    manager, first, again = asyncio.run(scenario())
    assert first == "failed"
    assert manager.models["a"].last_error == "RuntimeError: weights not found"
    assert again["outcome"] == "failed" and again["model"]["retry_in_s"] > 0
    assert serve.deploys == ["a"]  # the retry waits for the backoff: no second load
    assert "a" not in serve.apps  # what the failed load held was deleted


def test_the_reaper_unloads_idle_models_but_never_pinned_ones(tmp_path, serve):
    entries = models("idle", extra="      idle_timeout_s: 1\n")
    entries += "    - id: pinned\n      source: /srv/p\n      serve: true\n      always_on: true\n      idle_timeout_s: 1\n      memory_gb: 1\n"

    async def scenario():
        manager = make_manager(tmp_path, entries)
        await manager.start()  # loads the pinned model, starts the reaper
        await use(manager, "idle")
        await manager.wait("pinned", 30, time.time())
        deadline = time.monotonic() + 10
        while manager.models["idle"].state.value != "unloaded" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        return manager

    manager = asyncio.run(scenario())
    assert states(manager) == {"idle": "unloaded", "pinned": "ready"}, {m: r.last_error for m, r in manager.models.items()}
    assert manager.metrics.unloads == {("idle", "idle"): 1}


def test_a_model_loaded_again_is_not_reaped_for_a_use_before_its_last_unload(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 1\n"))
        await manager.start()
        await use(manager, "a")
        deadline = time.monotonic() + 10
        while manager.models["a"].state.value != "unloaded" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # its last use is now well past the idle timeout
        await manager.load("a")
        view = await manager.wait("a", 30, time.time())
        await asyncio.sleep(0.6)  # less than the idle timeout since it became ready
        return view["state"], manager.models["a"].state.value

    loaded, after = asyncio.run(scenario())
    assert (loaded, after) == ("ready", "ready")


def test_reconcile_unloads_unserved_and_removed_models_and_leaves_the_rest(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), budget_gb=10)
        await manager.reconcile()
        for model_id in ("a", "b", "c"):
            await use(manager, model_id)
        store = manager.store
        store.edit(0, lambda body: update_model(body, "a", {"serve": False}))
        store.edit(1, lambda body: remove_model(body, "b"))
        return manager, await manager.reconcile()

    manager, result = asyncio.run(scenario())
    assert result["actions"] == {"b": "removed", "a": "unloaded (serve: false)", "c": "ready"}
    assert states(manager) == {"a": "unloaded", "c": "ready"}
    assert serve.deploys == ["a", "b", "c"] and set(serve.apps) == {"c"}


def test_a_repo_is_served_only_once_downloaded_and_a_pinned_one_loads_when_its_download_completes(tmp_path, serve):
    entries = ("    - id: chat\n      source: org/chat\n      serve: true\n      memory_gb: 1\n"
               "    - id: base\n      source: org/base\n      serve: true\n      always_on: true\n      memory_gb: 1\n")
    record = paths.record_path(tmp_path / "var", "org/chat")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"state": "running", "percent": 40.0, "bytes_done": 40, "bytes_total": 100}))

    async def scenario():
        manager = make_manager(tmp_path, entries)
        started = await manager.start()
        got = await manager.acquire("chat")
        listed = {m["id"]: m for m in (await manager.status())["models"]}
        paths.local_dir(tmp_path / "models", "org/base").mkdir(parents=True)  # base's download completes
        deadline = time.monotonic() + 10
        while manager.models["base"].state.value != "ready" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return manager, started, got, listed

    manager, started, got, listed = asyncio.run(scenario())
    assert started["actions"]["base"] == "always on: waiting for its download"
    assert got["outcome"] == "downloading" and got["model"]["download"]["percent"] == 40.0
    assert listed["chat"]["state"] == "downloading" and listed["base"]["state"] == "not_downloaded"
    assert serve.deploys == ["base"]  # chat was never deployed without its weights
    assert manager.models["base"].state.value == "ready"
    assert [e["kind"] for e in EventLog(tmp_path / "var" / "events.jsonl").read()] == ["model_loaded"]


# --- the router's fast path (leases) ------------------------------------------------------
def attach_router(manager):
    """A router's leases (the real class), reached in-process instead of through a Serve handle."""
    leases = Leases()

    async def ask(method, *args):
        return [getattr(leases, method)(*args)]

    manager.routers.add(("router", "Router"))
    manager._ask_routers = ask
    return leases


async def lease(manager, leases, model_id):
    """What the router does with its first request to a ready model: acquire, take the lease, release."""
    got = await manager.acquire(model_id)
    assert got["outcome"] == "ready"
    leases.grant(model_id, got["lease"])
    await manager.release(model_id)


def test_a_stale_grant_never_reopens_a_revoked_lease():
    leases = Leases()
    leases.grant("a", 1)
    assert leases.begin("a")
    leases.end("a")
    assert leases.revoke("a", 1)["in_flight"] == 0
    leases.grant("a", 1)  # a "ready" answer that crossed the revocation
    assert not leases.begin("a")
    leases.grant("a", 2)  # the next ready answer carries a new number
    assert leases.begin("a")


def test_eviction_never_takes_a_model_busy_on_the_fast_path(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"))
        leases = attach_router(manager)
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        await lease(manager, leases, "a")
        assert leases.begin("a")  # a request on a that the manager never saw...
        await asyncio.sleep(1.2)
        await use(manager, "b")  # ...and b is the more recently used
        state_c = await use(manager, "c")
        leases.end("a")
        return manager, leases, state_c

    manager, leases, state_c = asyncio.run(scenario())
    assert state_c == "ready"
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}  # b went, not the busy a
    assert manager.metrics.unloads == {("b", "evicted"): 1}
    assert not leases.begin("b")  # b's lease was revoked before it was unloaded


def test_the_reaper_counts_fast_path_use_and_revokes_the_lease_when_it_unloads(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 1\n"))
        leases = attach_router(manager)
        await manager.start()
        await use(manager, "a")
        await lease(manager, leases, "a")
        relets = 0
        for _ in range(6):  # 1.8 s of use, past the 1 s idle timeout
            if not leases.begin("a"):  # the reaper asked, saw it in use, and left it loaded
                relets += 1
                await lease(manager, leases, "a")  # the router's slow path takes a new lease
                assert leases.begin("a")
            await asyncio.sleep(0.3)
            leases.end("a")
        still = manager.models["a"].state.value
        deadline = time.monotonic() + 10
        while manager.models["a"].state.value != "unloaded" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return manager, leases, still, relets

    manager, leases, still, relets = asyncio.run(scenario())
    assert still == "ready"  # in use on the fast path: not reaped
    assert relets <= 2  # at most one slow-path request per idle timeout
    assert states(manager) == {"a": "unloaded"}  # then idle: reaped
    assert manager.metrics.unloads == {("a", "idle"): 1}
    assert not leases.begin("a")  # and the fast path is closed


def test_status_shows_requests_in_flight_on_the_fast_path(tmp_path, serve):
    async def scenario():
        manager = make_manager(tmp_path, models("a"))
        leases = attach_router(manager)
        await manager.reconcile()
        await use(manager, "a")
        await lease(manager, leases, "a")
        leases.begin("a")
        leases.begin("a")
        return await manager.status()

    status = asyncio.run(scenario())
    assert status["models"][0]["in_flight"] == 2
