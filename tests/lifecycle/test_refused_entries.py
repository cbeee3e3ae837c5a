"""Entries the host refuses (app/engines/host_rules.py) never get an engine: their load fails at once,
before admission, and the model shows FAILED with the setting that would allow it. This covers every
load: at start, after a reconcile (whoever wrote the registry), for a request."""

import asyncio

from app.registry.edits import update_model
from tests.lifecycle.fakes import FakeServe, make_manager, models, settle, states, use

REMOTE = "      always_on: true\n      engine: {extra_args: {trust_remote_code: true}}\n"


def test_a_pinned_model_with_remote_code_fails_at_start_without_the_setting(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("remote", extra=REMOTE) + models("plain"), serve)
        result = await manager.start()
        await settle(manager)
        await use(manager, "plain")
        return manager, result

    manager, result = asyncio.run(scenario())
    assert not [a for a in result["actions"].values() if a.startswith("error")]
    assert states(manager) == {"remote": "failed", "plain": "ready"}
    assert "LLMBOX_ALLOW_REMOTE_CODE" in manager.models["remote"].last_error
    assert serve.deploys == ["plain"]  # no engine was ever deployed for it


def test_remote_code_loads_where_the_host_allows_it(tmp_path):
    serve = FakeServe()

    async def scenario():
        manager = make_manager(tmp_path, models("remote", extra=REMOTE), serve, allow_remote_code=True)
        await manager.start()
        await settle(manager)
        return manager

    assert states(asyncio.run(scenario())) == {"remote": "ready"}
    assert serve.configs["remote"]["engine_kwargs"]["trust_remote_code"] is True


def test_a_source_moved_outside_the_roots_by_a_reconcile_fails_on_its_next_load(tmp_path):
    serve = FakeServe()
    (tmp_path / "elsewhere").mkdir()

    async def scenario():
        manager = make_manager(tmp_path, models("m"), serve)
        await manager.reconcile()
        first = await use(manager, "m")
        revision = manager.store.read().revision
        manager.store.edit(revision, lambda body: update_model(body, "m", {"source": str(tmp_path / "elsewhere")}))
        actions = (await manager.reconcile())["actions"]
        await settle(manager)
        return manager, first, actions, await use(manager, "m")

    manager, first, actions, after = asyncio.run(scenario())
    assert first == "ready" and not actions["m"].startswith("error")
    assert after == "failed" and "outside the models folder" in manager.models["m"].last_error
    assert serve.deploys == ["m"]  # only the first, allowed, load
