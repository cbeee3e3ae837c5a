"""A restarted manager (Ray restarts the actor) rebuilds its state from Serve's applications and
the registry, without unloading healthy models; and its lease numbers keep growing."""

import asyncio

from app.engines.llm_config import app_name
from app.engines.serve_apps import AppInfo
from app.registry.edits import update_model
from tests.lifecycle.fakes import FakeRouter, FakeServe, lease, make_manager, models, settle, use


def test_a_restarted_manager_adopts_running_models_and_deletes_half_started_ones(tmp_path):
    serve, router = FakeServe(), FakeRouter()

    async def scenario():
        first = make_manager(tmp_path, models("a", "b", "c"), serve, router=router, budget_gb=10)
        await first.start()
        await use(first, "a")
        await lease(first, router, "a")
        serve.polls = 1000
        await first.acquire("b")  # b is still loading when the manager dies
        while "b" not in serve.apps:
            await asyncio.sleep(0.01)
        for task in first._tasks:
            task.cancel()
        old_lease, deploys = first.models["a"].lease, list(serve.deploys)
        second = make_manager(tmp_path, "", serve, router=router, budget_gb=10)  # Ray runs __init__ again
        await second.start()
        await settle(second)
        return first, second, old_lease, deploys

    first, second, old_lease, deploys = asyncio.run(scenario())
    assert second.models["a"].state.value == "ready" and second.models["a"].pids == first.models["a"].pids
    assert second.models["a"].processes == first.models["a"].processes  # watched again
    assert second.models["b"].state.value == "unloaded" and "b" in serve.deletes  # deploying: decided anew
    assert serve.deletes == ["b"] and serve.deploys == deploys  # a was neither deleted nor deployed again
    assert second.models["a"].lease > old_lease  # a revocation by the new manager closes the old grants
    assert set(second.routers.apps) == {"router"}  # found again in Serve's snapshot


def test_a_restarted_manager_reloads_a_model_whose_settings_changed_while_it_was_down(tmp_path):
    serve = FakeServe()

    async def scenario():
        first = make_manager(tmp_path, models("a"), serve)
        await first.start()
        await use(first, "a")
        first.store.edit(0, lambda body: update_model(body, "a", {"engine": {"max_model_len": 256}}))
        second = make_manager(tmp_path, "", serve)
        result = await second.start()
        await settle(second)
        return second, result

    second, result = asyncio.run(scenario())
    assert result["actions"]["a"] == "reloading (engine settings changed)"
    assert serve.deploys == ["a", "a"] and second.models["a"].state.value == "ready"


def test_applications_of_models_no_longer_in_the_registry_are_deleted(tmp_path):
    serve = FakeServe()
    serve.apps["ghost"] = {"polls": 9, "need": 1, "key": "", "pid": 1}

    async def scenario():
        manager = make_manager(tmp_path, models("a"), serve)
        await manager.start()
        return manager

    manager = asyncio.run(scenario())
    assert "ghost" not in serve.apps and "ghost" not in manager.models
    assert app_name("ghost") not in serve.snapshot()
    assert isinstance(serve.status("a"), AppInfo)


def test_a_request_during_recovery_waits_for_it_instead_of_finding_no_model(tmp_path):
    serve = FakeServe()

    async def scenario():
        first = make_manager(tmp_path, models("a"), serve)
        await first.start()
        await use(first, "a")
        second = make_manager(tmp_path, "", serve)
        slow = serve.engine_info

        def slow_engine_info(model_id):  # the replica takes a moment to report
            __import__("time").sleep(0.3)
            return slow(model_id)

        serve.engine_info = slow_engine_info
        starting = asyncio.ensure_future(second.start())  # what Ray's restart does
        await asyncio.sleep(0.05)
        got = await second.acquire("a", "rid-1")  # a router's request arrives meanwhile
        await starting
        return got

    got = asyncio.run(scenario())
    assert got["outcome"] == "ready"
    assert serve.deploys == ["a"]  # adopted, not loaded again
