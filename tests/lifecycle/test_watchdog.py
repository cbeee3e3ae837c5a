"""A crashed engine is the manager's state change: RESTARTING at once, an event with the exit
code and the engine's last error line, a counter, a reload through admission; FAILED after three
crashes in ten minutes. Serve does not repair it behind the manager's back."""

import asyncio

from app.engines.llm_config import Placement

from app.engines.serve_apps import AppInfo, Replica
from app.events import EventLog
from app.lifecycle.runtime import Process, Runtime
from app.lifecycle.watchdog import find_crash
from app.registry.schema import ModelEntry
from tests.lifecycle.fakes import Dead, FakeClock, FakeRouter, FakeServe, make_manager, models, settle, use

KILLED = [{"pid": 5001, "name": "EngineCore", "exit_code": -9, "signal": "SIGKILL"}]


def ready(pid=10):
    rt = Runtime(entry=ModelEntry(id="m", source="/m", serve=True), idle_timeout_s=0, since=0.0)
    rt.processes = [Process(pid, 1.0, "replica", "replica"), Process(pid + 1, 1.0, "VLLM::EngineCore", "engine")]
    return rt


def app(status="RUNNING", pid=10, message=""):
    return AppInfo(status, message, {"model": [Replica("r1", "RUNNING", pid)]})


def test_find_crash_names_what_died():
    rt = ready()
    assert find_crash(rt, app(), lambda p: True) is None
    assert find_crash(rt, None, lambda p: True).process == "application"
    unhealthy = find_crash(rt, app("UNHEALTHY", message="Traceback...\nEngineDeadError: gone"), lambda p: True)
    assert (unhealthy.process, unhealthy.detail) == ("application", "Serve reports it UNHEALTHY: EngineDeadError: gone")
    engine = find_crash(rt, app(), lambda p: p.pid != 11)
    assert (engine.process, engine.pid) == ("engine", 11)
    replica = find_crash(rt, app(), lambda p: p.pid != 10)
    assert (replica.process, replica.pid) == ("replica", 10)  # the replica first: its engines die with it
    assert find_crash(rt, app(pid=99), lambda p: True).detail == "Serve replaced its replica"


def test_an_engine_crash_is_noticed_reported_and_reloaded_through_admission(tmp_path):
    serve, dead, router = FakeServe(), Dead(), FakeRouter()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve, router=router, dead=dead)
        await manager.reconcile()
        await use(manager, "a", router.id)
        got = await manager.acquire("a", router.id)
        router.leases.grant("a", got["lease"])
        engine = manager.models["a"].processes[1].pid
        serve.exited["a"] = KILLED
        dead.pids.add(engine)  # kill -9 of its VLLM::EngineCore
        await manager.watch_once()
        state = manager.models["a"].state.value
        during = await manager.acquire("a", router.id)
        await settle(manager)
        fast_path = router.leases.begin("a")
        return manager, state, during, fast_path

    manager, state, during, fast_path = asyncio.run(scenario())
    assert state == "restarting"
    assert during["outcome"] == "pending" and during["model"]["loading"]["state"] == "restarting"
    assert not fast_path  # its lease was revoked: requests go through the loading contract
    assert manager.models["a"].state.value == "ready"  # reloaded
    assert serve.deploys == ["a", "a"] and serve.deletes == ["a"]  # the manager, not Serve, restarted it
    assert manager.counters.crashes == {"a": 1} and manager.counters.loads[("a", "ok")] == 2
    crash = EventLog(tmp_path / "var" / "events.jsonl").read(kind="engine_crashed")[0]
    assert crash["model"] == "a" and crash["process"] == "engine" and crash["exit_code"] == -9
    assert crash["signal"] == "SIGKILL" and crash["last_error"] == "EngineDeadError: EngineCore died"
    assert manager.models["a"].in_flight() == 1  # the request counted in during the restart, not the dead one


def test_serve_replacing_a_replica_on_its_own_is_a_crash_too(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.reconcile()
        await use(manager, "a")
        serve.replace_replica("a")
        await manager.watch_once()
        await settle(manager)
        return manager

    manager = asyncio.run(scenario())
    assert manager.counters.crashes == {"a": 1} and serve.deploys == ["a", "a"]
    assert manager.models["a"].pids == [serve.apps["a"]["pid"]]  # it watches the new replica


def test_a_crash_reload_goes_through_admission(tmp_path):
    serve, dead, clock = FakeServe(), Dead(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b"), serve, clock, dead=dead, budget_gb=3, load_timeout_s=60)
        await manager.reconcile()
        await use(manager, "a")
        dead.pids.add(manager.models["a"].pids[0])
        b = manager.models["b"]
        b.state, b.admitted, b.placement = b.state.LOADING, True, Placement((0,), 2.0)
        await manager.watch_once()  # b now holds the memory a would need, and b's load never ends
        await asyncio.sleep(0.3)
        clock.advance(61)  # a's reload waits for room until its deadline
        await settle(manager)
        return manager

    manager = asyncio.run(scenario())
    assert manager.models["a"].state.value == "unloaded" and manager.models["a"].refused
    assert "not enough memory for 'a'" in manager.models["a"].last_error


def crash_repeatedly(tmp_path, times: int, apart_s: float):
    """Kill the replica of a ready model ``times`` times, ``apart_s`` apart; returns what followed."""
    serve, dead, clock = FakeServe(), Dead(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve, clock, dead=dead)
        await manager.reconcile()
        await use(manager, "a")
        for _ in range(times):
            clock.advance(apart_s)
            dead.pids.add(manager.models["a"].pids[0])
            await manager.watch_once()
            await settle(manager)
        return manager, await manager.acquire("a")

    return serve, *asyncio.run(scenario())


def test_three_crashes_in_ten_minutes_mean_failed_with_the_backoff(tmp_path):
    serve, manager, got = crash_repeatedly(tmp_path, times=3, apart_s=120)
    assert manager.models["a"].state.value == "failed"
    assert got["outcome"] == "failed" and got["model"]["retry_in_s"] > 0
    assert got["model"]["last_error"].startswith("crashed 3 times within 10 minutes; last: its replica crashed")
    assert serve.deploys == ["a", "a", "a"]  # two reloads, then no more


def test_crashes_further_apart_than_the_window_keep_reloading(tmp_path):
    _, manager, got = crash_repeatedly(tmp_path, times=4, apart_s=400)
    assert got["outcome"] == "ready" and manager.counters.crashes == {"a": 4}
