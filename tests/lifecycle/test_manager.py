"""The model manager's decisions, fast: Serve, the clock and the routers stood in (tests/lifecycle/fakes.py).

The real thing (Ray Serve + vLLM) is exercised by tests/serving and tests/chaos; here the
manager's own logic is under test: single flight, eviction order, busy models, refusals,
failures with backoff, the idle reaper, reconcile, downloads and the lease protocol.
"""

import asyncio
import json

from app.events import EventLog
from app.hub import paths
from app.registry.edits import remove_model, update_model
from app.serving.leases import Leases
from tests.lifecycle.fakes import FakeClock, FakeRouter, FakeServe, lease, make_manager, models, settle, states, use


def test_concurrent_requests_share_one_load(tmp_path):
    serve = FakeServe(polls=3)

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.reconcile()
        return await asyncio.gather(*(use(manager, "a") for _ in range(5)))

    assert asyncio.run(scenario()) == ["ready"] * 5
    assert serve.deploys == ["a"]


def test_the_least_valuable_idle_model_is_evicted_first(tmp_path):
    serve, clock = FakeServe(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, clock)  # budget 5 GB fits two of 2 GB
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        clock.advance(60)
        await use(manager, "a")  # a is now the recently used one
        await use(manager, "c")
        return manager

    manager = asyncio.run(scenario())
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}
    assert manager.counters.unloads == {("b", "evicted"): 1}


def test_a_model_with_a_request_in_flight_is_never_evicted(tmp_path):
    serve, clock = FakeServe(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, clock)
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        await manager.acquire("a")  # a request in flight on a, the least recently used...
        clock.advance(60)
        await use(manager, "b")
        return manager, await use(manager, "c")

    manager, state_c = asyncio.run(scenario())
    assert state_c == "ready"
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}  # ...so b went instead


def test_a_failed_load_reports_the_engine_error_cleanly_and_backs_off(tmp_path):
    serve, clock = FakeServe(failing={"a"}), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve, clock)
        await manager.reconcile()
        first = await use(manager, "a")
        again = await manager.acquire("a")
        left = set(serve.apps)
        clock.advance(6)  # past the first backoff (5 s)
        retried = await manager.acquire("a")
        return manager, first, again, left, retried

    manager, first, again, left, retried = asyncio.run(scenario())
    assert first == "failed"
    assert manager.models["a"].last_error == "RuntimeError: weights not found"  # no traceback, no ANSI codes
    assert again["outcome"] == "failed" and again["model"]["retry_in_s"] == 5
    assert retried["outcome"] == "pending"  # after the backoff a request tries again
    assert left == set()  # what the failed load held was deleted, and no new load within the backoff


def test_the_reaper_unloads_idle_models_but_never_pinned_ones(tmp_path):
    serve, clock = FakeServe(), FakeClock()
    entries = models("idle", extra="      idle_timeout_s: 5\n")
    entries += "    - id: pinned\n      source: /srv/p\n      serve: true\n      always_on: true\n      idle_timeout_s: 5\n      memory_gb: 1\n"

    async def scenario():
        manager = make_manager(tmp_path, entries, serve, clock)
        await manager.start()  # loads the pinned model
        await use(manager, "idle")
        await manager.wait("pinned", 30, 0)
        clock.advance(4)
        await manager.reap_once()
        before = states(manager)
        clock.advance(2)
        await manager.reap_once()
        await settle(manager)  # the unload runs as its own task
        return manager, before

    manager, before = asyncio.run(scenario())
    assert before == {"idle": "ready", "pinned": "ready"}  # not idle for long enough yet
    assert states(manager) == {"idle": "unloaded", "pinned": "ready"}
    assert manager.counters.unloads == {("idle", "idle"): 1}


def test_a_model_loaded_again_is_not_reaped_for_a_use_before_its_last_unload(tmp_path):
    serve, clock = FakeServe(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 5\n"), serve, clock)
        await manager.reconcile()
        await use(manager, "a")
        await manager.unload("a")
        clock.advance(60)  # its last use is now well past the idle timeout
        await manager.load("a")
        view = await manager.wait("a", 30, 0)
        clock.advance(3)  # less than the idle timeout since it became ready
        await manager.reap_once()
        await settle(manager)
        return view["model"]["state"], manager.models["a"].state.value

    assert asyncio.run(scenario()) == ("ready", "ready")


def test_reconcile_unloads_unserved_and_removed_models_and_leaves_the_rest(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, budget_gb=10)
        await manager.reconcile()
        for model_id in ("a", "b", "c"):
            await use(manager, model_id)
        manager.store.edit(0, lambda body: update_model(body, "a", {"serve": False}))
        manager.store.edit(1, lambda body: remove_model(body, "b"))
        return manager, await manager.reconcile()

    manager, result = asyncio.run(scenario())
    assert result["actions"] == {"b": "removed", "a": "unloaded (serve: false)", "c": "ready"}
    assert states(manager) == {"a": "unloaded", "c": "ready"}
    assert serve.deploys == ["a", "b", "c"] and set(serve.apps) == {"c"}


def test_a_repo_is_served_only_once_downloaded_and_a_pinned_one_loads_when_its_download_completes(tmp_path):
    serve = FakeServe()
    entries = ("    - id: chat\n      source: org/chat\n      serve: true\n      memory_gb: 1\n"
               "    - id: base\n      source: org/base\n      serve: true\n      always_on: true\n      memory_gb: 1\n")
    record = paths.record_path(tmp_path / "var", "org/chat")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"state": "running", "percent": 40.0, "bytes_done": 40, "bytes_total": 100}))

    async def scenario():
        manager = make_manager(tmp_path, entries, serve)
        started = await manager.start()
        got = await manager.acquire("chat")
        listed = {m["id"]: m for m in (await manager.status())["models"]}
        paths.local_dir(tmp_path / "models", "org/base").mkdir(parents=True)  # base's download completes
        await manager.reap_once()
        await manager.wait("base", 30, 0)
        return manager, started, got, listed

    manager, started, got, listed = asyncio.run(scenario())
    assert started["actions"]["base"] == "always on: waiting for its download"
    assert got["outcome"] == "downloading" and got["model"]["download"]["percent"] == 40.0
    assert listed["chat"]["state"] == "downloading" and listed["base"]["state"] == "not_downloaded"
    assert serve.deploys == ["base"]  # chat was never deployed without its weights
    assert manager.models["base"].state.value == "ready"
    assert [e["kind"] for e in EventLog(tmp_path / "var" / "events.jsonl").read()] == ["model_loaded"]


# --- the router's fast path (leases) ------------------------------------------------------
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


def test_eviction_never_takes_a_model_busy_on_the_fast_path(tmp_path):
    serve, clock, router = FakeServe(), FakeClock(), FakeRouter()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, clock, router=router)
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        await lease(manager, router, "a")
        assert router.leases.begin("a")  # a request on a that the manager never saw...
        clock.advance(60)
        await use(manager, "b")  # ...and b is the more recently used
        state_c = await use(manager, "c")
        router.leases.end("a")
        return manager, state_c

    manager, state_c = asyncio.run(scenario())
    assert state_c == "ready"
    assert states(manager) == {"a": "ready", "b": "unloaded", "c": "ready"}  # b went, not the busy a
    assert manager.counters.unloads == {("b", "evicted"): 1}
    assert not router.leases.begin("b")  # b's lease was revoked before it was unloaded


def test_the_reaper_counts_fast_path_use_and_revokes_the_lease_when_it_unloads(tmp_path):
    serve, clock, router = FakeServe(), FakeClock(), FakeRouter()

    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 5\n"), serve, clock, router=router)
        await manager.reconcile()
        await use(manager, "a")
        await lease(manager, router, "a")
        assert router.leases.begin("a")  # in use on the fast path only...
        clock.advance(60)
        await manager.reap_once()
        await settle(manager)
        still = manager.models["a"].state.value
        router.leases.end("a")
        clock.advance(60)
        await manager.reap_once()
        await settle(manager)
        return manager, still

    manager, still = asyncio.run(scenario())
    assert still == "ready"  # ...so not reaped
    assert states(manager) == {"a": "unloaded"}  # then idle: reaped
    assert manager.counters.unloads == {("a", "idle"): 1}
    assert not router.leases.begin("a")  # and the fast path is closed


def test_status_shows_requests_in_flight_on_the_fast_path(tmp_path):
    serve, router = FakeServe(), FakeRouter()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve, router=router)
        await manager.reconcile()
        await use(manager, "a")
        await lease(manager, router, "a")
        router.leases.begin("a")
        router.leases.begin("a")
        return await manager.status()

    assert asyncio.run(scenario())["models"][0]["in_flight"] == 2


def test_routers_are_told_every_change_so_v1_models_needs_no_round_trip(tmp_path):
    """What /v1/models answers from: the views the manager pushes; load, unload and reconcile
    return only once the routers have them."""
    serve, router = FakeServe(), FakeRouter()

    def pushed(model_id: str) -> str | None:
        return next((m["state"] for m in router.views[-1] if m["id"] == model_id), None) if router.views else None

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve, router=router)
        await manager.reconcile()
        seen = [pushed("a")]
        await manager.load("a")
        seen.append(pushed("a"))
        await manager.wait("a", 30)
        await asyncio.sleep(0.01)  # a change made by a background load is pushed as it happens
        seen.append(pushed("a"))
        ready_view = next(m for m in router.views[-1] if m["id"] == "a")
        await manager.unload("a")
        seen.append(pushed("a"))
        return seen, ready_view

    seen, ready_view = asyncio.run(scenario())
    assert seen == ["unloaded", "loading", "ready", "unloaded"]
    assert ready_view["endpoint"] == {"host": "127.0.0.1", "port": 9}  # where the router forwards
