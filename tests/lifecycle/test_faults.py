"""Faults the manager meets, each handled (the manager before the split mishandled each one):
a background loop that raises, overlapping reconciles, a router that dies with requests counted
in, a request during an unload, two loads admitted against the same free memory, a settings
edit during a load, a bad registry entry, and a router that does not answer a revocation."""

import asyncio
import threading

from app.devtools.fake_nvml import FakeGpu, FakeNvml
from app.gpu.memory import NvmlMemory
from app.lifecycle import loops
from app.registry.edits import remove_model, update_model
from tests.lifecycle.fakes import FakeClock, FakeRouter, FakeServe, make_manager, models, settle, states, use


def test_a_background_loop_survives_an_exception_and_counts_it(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 1\n"), serve,
                               clock=__import__("time").time, reaper_interval_s=0.05)
        real, calls = manager.routers.read_usage, []

        async def flaky(models_):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a router call blew up")
            return await real(models_)

        manager.routers.read_usage = flaky
        await manager.start()
        await use(manager, "a")
        for _ in range(100):  # the reaper's first tick raises; later ticks still unload the idle model
            if manager.models["a"].state.value == "unloaded":
                break
            await asyncio.sleep(0.05)
        return manager

    manager = asyncio.run(scenario())
    assert manager.models["a"].state.value == "unloaded"
    assert manager.counters.loop_errors == {"reaper": 1}


def test_every_survives_errors_and_calls_on_error():
    seen, errors = [], []

    async def tick():
        seen.append(1)
        if len(seen) < 3:
            raise ValueError("boom")

    async def scenario():
        task = asyncio.ensure_future(loops.every(0, tick, "x", errors.append))
        while len(seen) < 4:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(scenario())
    assert errors == ["x", "x"]


def test_overlapping_reconciles_run_one_at_a_time_and_the_newest_registry_wins(tmp_path):
    serve = FakeServe()
    serve.delete_gate = threading.Event()  # unloading b takes a while: the reconciles overlap

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b"), serve, budget_gb=10)
        await manager.reconcile()
        await use(manager, "a")
        await use(manager, "b")
        manager.store.edit(0, lambda body: remove_model(body, "b"))
        first = asyncio.ensure_future(manager.reconcile())  # sees revision 1, starts unloading b
        await asyncio.sleep(0.05)
        manager.store.edit(1, lambda body: update_model(body, "a", {"idle_timeout_s": 77}))
        second = asyncio.ensure_future(manager.reconcile())  # revision 2
        await asyncio.sleep(0.05)
        serve.delete_gate.set()
        return manager, await asyncio.gather(first, second)

    manager, (first, second) = asyncio.run(scenario())
    assert first["actions"]["b"] == "removed" and "b" not in second["actions"]  # no KeyError, no double unload
    assert manager.models["a"].idle_timeout_s == 77 and manager.registry_revision == 2
    assert serve.deletes == ["b"]


def test_in_flight_counted_through_a_router_that_died_is_dropped(tmp_path):
    serve, clock, router = FakeServe(), FakeClock(), FakeRouter("rid-1")

    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 5\n"), serve, clock, router=router)
        await manager.reconcile()
        await use(manager, "a", router="rid-1")
        got = await manager.acquire("a", "rid-1")  # counted in; its router dies before it releases
        busy = manager.models["a"].in_flight()
        router.id = serve.routers["router"][0] = "rid-2"  # Serve replaced the router replica
        await manager.watch_once()
        clock.advance(60)
        await manager.reap_once()
        await settle(manager)
        return manager, got, busy

    manager, got, busy = asyncio.run(scenario())
    assert got["outcome"] == "ready" and busy == 1
    assert states(manager) == {"a": "unloaded"}  # reaped: the dead router's count no longer pins it


def test_requests_cut_off_by_an_unload_are_no_longer_counted(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.reconcile()
        await use(manager, "a")
        await manager.acquire("a")  # in flight, never released (its engine went away)
        await manager.unload("a")
        return manager.models["a"].in_flight()

    assert asyncio.run(scenario()) == 0


def test_a_request_that_arrives_during_an_unload_waits_for_the_reload(tmp_path):
    serve = FakeServe()
    serve.delete_gate = threading.Event()

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.reconcile()
        await use(manager, "a")
        unloading = asyncio.ensure_future(manager.unload("a"))
        await asyncio.sleep(0.05)
        state = manager.models["a"].state.value
        got = await manager.acquire("a")
        waiting = asyncio.ensure_future(manager.wait("a", 30, 0))
        await asyncio.sleep(0.05)
        serve.delete_gate.set()
        await unloading
        return state, got, await waiting

    state, got, waited = asyncio.run(scenario())
    assert state == "unloading"
    assert got["outcome"] == "pending" and got["model"]["state"] == "unloading"
    assert waited["outcome"] == "ready"
    assert serve.deploys == ["a", "a"]


def test_gpu_admission_counts_what_loading_models_will_take(tmp_path):
    serve = FakeServe(polls=20)  # loads take a while
    device = FakeGpu(total_gb=10.0)
    gpu = NvmlMemory(FakeNvml([device]))  # NVML sees nothing of a load in progress
    entries = models("a", "b").replace("memory_gb: 2", "memory_gb: 6")
    delete = serve.delete

    def delete_and_free(model_id):  # the engine's memory comes back when its app is deleted
        delete(model_id)
        device.used_gb = 0.0

    serve.delete = delete_and_free

    async def scenario():
        manager = make_manager(tmp_path, entries, serve, memory=gpu)
        await manager.reconcile()
        a = await manager.acquire("a")
        while not serve.deploys:  # a is admitted and loading when b comes
            await asyncio.sleep(0.01)
        await manager.acquire("b")
        while manager.models["a"].state.value != "ready":
            await asyncio.sleep(0.01)
        device.used_gb = 6.0  # a's engine holds its memory now
        deployed_while_a_loaded = list(serve.deploys)
        b_state = manager.models["b"].state.value
        await manager.release("a", a["ticket"])  # a goes idle: b may have its memory now
        waited = await manager.wait("b", 30, 0)
        return manager, deployed_while_a_loaded, b_state, waited

    manager, deployed, b_state, waited = asyncio.run(scenario())
    assert deployed == ["a"] and b_state == "loading"  # b was not admitted against a's memory...
    assert waited["outcome"] == "ready" and serve.deploys == ["a", "b"]  # ...but once a could go
    assert manager.counters.unloads == {("a", "evicted"): 1}


def test_cpu_admission_counts_what_loading_models_will_take(tmp_path):
    serve = FakeServe(polls=20)

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b"), serve, budget_gb=3)
        await manager.reconcile()
        await manager.acquire("a")
        while not serve.deploys:  # a is admitted and loading when b comes
            await asyncio.sleep(0.01)
        await manager.acquire("b")
        while manager.models["a"].state.value != "ready":
            await asyncio.sleep(0.01)
        return list(serve.deploys)

    assert asyncio.run(scenario()) == ["a"]


def test_a_load_that_could_never_fit_is_refused_at_once(tmp_path):
    serve = FakeServe()
    entries = models("chat") + ("    - id: pinned\n      source: /srv/p\n      serve: true\n      always_on: true\n"
                                "      memory_gb: 4\n")

    async def scenario():
        manager = make_manager(tmp_path, entries, serve)
        manager.memory.process_gb = lambda pids, node="": 0.0  # no measurement: the registry's memory_gb counts
        await manager.start()
        await manager.wait("pinned", 30, 0)
        await manager.acquire("chat")
        return await manager.wait("chat", 30, 0)

    waited = asyncio.run(scenario())
    assert waited["outcome"] == "refused"
    assert "not enough memory for 'chat': needs 2.0 GB, 1.0 GB free of 5.0 GB" in waited["model"]["last_error"]


def test_a_load_drains_a_busy_model_whose_new_requests_wait_for_its_reload(tmp_path):
    serve, clock = FakeServe(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, clock)  # room for two
        await manager.reconcile()
        await use(manager, "a")
        held_b = await manager.acquire("b")  # b is busy...
        await manager.wait("b", 30, 0)
        clock.advance(10)
        held_a = await manager.acquire("a")  # ...and so is a, used more recently
        for_c = await manager.acquire("c")  # c needs room: the least valuable busy model (b) drains
        while not manager.models["b"].draining:
            await asyncio.sleep(0.01)
        for_b = await manager.acquire("b")  # a new request to the draining b waits for b's reload
        waiting = manager.models["b"].state.value
        await manager.release("b", held_b["ticket"])  # b's request in flight ends: b goes, c comes
        waited_c = await manager.wait("c", 30, 0)
        unloads = dict(manager.counters.unloads)
        for model_id, got in (("a", held_a), ("c", for_c)):
            await manager.release(model_id, got["ticket"])
        waited_b = await manager.wait("b", 30, 0)  # b's waiting request gets b back
        return for_b, waiting, waited_c, unloads, waited_b

    for_b, waiting, waited_c, unloads, waited_b = asyncio.run(scenario())
    assert for_b["outcome"] == "pending" and waiting == "ready"  # not sent to the draining engine
    assert waited_c["outcome"] == "ready" and unloads == {("b", "evicted"): 1}  # a, busy, was never drained
    assert waited_b["outcome"] == "ready"


def test_a_drain_that_does_not_end_by_the_load_deadline_refuses_the_load(tmp_path):
    serve, clock = FakeServe(), FakeClock()

    async def scenario():
        manager = make_manager(tmp_path, models("a", "b", "c"), serve, clock, load_timeout_s=60)
        await manager.reconcile()
        for model_id in ("a", "b"):
            await use(manager, model_id)
            await manager.acquire(model_id)  # both busy, for good
        await manager.acquire("c")
        await asyncio.sleep(0.05)
        clock.advance(61)
        return manager, await manager.wait("c", 30, 0)

    manager, waited = asyncio.run(scenario())
    assert waited["outcome"] == "refused" and "not enough memory for 'c'" in waited["model"]["last_error"]
    assert {m: r.state.value for m, r in manager.models.items()} == {"a": "ready", "b": "ready", "c": "unloaded"}
    assert not manager.models["b"].draining and not manager.models["a"].draining


def test_a_settings_edit_during_a_load_is_applied_before_the_model_is_ready(tmp_path):
    serve = FakeServe(polls=500)  # still loading when the edit comes

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.reconcile()
        await manager.acquire("a")
        while not serve.deploys:  # deployed with the old settings, not ready yet
            await asyncio.sleep(0.01)
        manager.store.edit(0, lambda body: update_model(body, "a", {"engine": {"max_model_len": 256}}))
        action = (await manager.reconcile())["actions"]["a"]
        waited = await manager.wait("a", 30, 0)
        return manager, action, waited

    manager, action, waited = asyncio.run(scenario())
    assert action.startswith("loading; the new engine settings apply")
    assert waited["outcome"] == "ready"
    assert serve.deploys == ["a", "a"] and '"max_model_len": 256' in serve.keys[-1]
    assert manager.models["a"].config_key == serve.keys[-1]


def test_a_bad_entry_never_stops_the_others_from_reconciling(tmp_path):
    serve = FakeServe()
    serve.delete_error.add("bad")

    async def scenario():
        manager = make_manager(tmp_path, models("bad", "good"), serve, budget_gb=10)
        await manager.reconcile()
        await use(manager, "bad")
        manager.store.edit(0, lambda body: update_model(body, "bad", {"serve": False}))
        manager.store.edit(1, lambda body: update_model(body, "good", {"always_on": True}))
        result = await manager.reconcile()
        await manager.wait("good", 30, 0)
        return manager, result

    manager, result = asyncio.run(scenario())
    assert result["actions"]["bad"] == "error: RuntimeError: Serve could not delete bad"
    assert result["actions"]["good"] == "loading (always on)"
    assert manager.models["good"].state.value == "ready"


def test_a_router_that_does_not_answer_a_revocation_counts_as_busy_until_it_does(tmp_path):
    serve, clock, router = FakeServe(), FakeClock(), FakeRouter()

    async def scenario():
        manager = make_manager(tmp_path, models("a", extra="      idle_timeout_s: 5\n"), serve, clock, router=router)
        await manager.reconcile()
        await use(manager, "a")
        got = await manager.acquire("a", router.id)
        router.leases.grant("a", got["lease"])
        await manager.release("a", got["ticket"])
        clock.advance(60)
        router.silent = True  # its revoke times out
        await manager.reap_once()
        await settle(manager)
        while_silent = manager.models["a"].state.value
        router.silent = False
        clock.advance(1)
        await manager.reap_once()
        await settle(manager)
        return manager, while_silent

    manager, while_silent = asyncio.run(scenario())
    assert while_silent == "ready"  # its lease may still be open: not unloaded
    assert states(manager) == {"a": "unloaded"}  # asked again, it answered: unloaded
    assert not router.leases.begin("a")  # and its fast path to the deleted app is closed
