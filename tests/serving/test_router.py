"""The router's request path, in-process: real router code and a real ModelManager (over
FakeServe), fake model replicas. Bad input, keys, not-found answers, the fast path, the loading
contract during a restart or an unload, engine failures without internals, a client that leaves."""

import asyncio
import json
import threading

import pytest
from starlette.testclient import TestClient

from app.devtools.sandbox import wait_for
from app.serving import router as router_mod
from app.serving.keys import hash_key
from tests.lifecycle.fakes import Dead, FakeServe, make_manager, models, use
from tests.serving.fakes import CHAT, Body, Gen, Replica, make_router, stream_items

RAY_FAILURE = RuntimeError(
    "\x1b[36mray::ServeReplica:model-a:model.chat()\x1b[39m (pid=12345, ip=127.0.0.1, "
    "actor_id=6099311916ced9bc19033bb901000000, repr=<ray.serve._private.replica.ServeReplica object>)\n"
    "Traceback (most recent call last):\n  File \"/x/vllm/v1/engine/async_llm.py\", line 1, in generate\n"
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above)."
)
CHAT_BODY = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def box(tmp_path, monkeypatch):
    """A router over a manager with models a (served) and hidden (serve: false)."""
    serve, dead = FakeServe(), Dead()
    entries = models("a") + "    - id: hidden\n      source: /srv/h\n"
    manager = make_manager(tmp_path, entries, serve, dead=dead, poll_interval_s=0.02)
    replicas = {"a": Replica(Gen([Body(CHAT)]))}
    router = make_router(monkeypatch, manager, replicas)
    with TestClient(router_mod.api, base_url="http://127.0.0.1") as client:
        client.portal.call(manager.reconcile)
        yield client, manager, serve, dead, replicas, router


def messages_in(lines: list[str]) -> list[str]:
    return [json.loads(line[6:])["error"]["message"] for line in lines if line.startswith("data: {\"error\"")]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"messages": []}', b'{"model": 5, "input": "x"}'])
def test_malformed_bodies_get_400_in_the_openai_shape(box, body):
    client = box[0]
    path = "/v1/embeddings" if b"input" in body else "/v1/chat/completions"
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_unknown_and_unserved_models_are_not_found(box):
    client = box[0]
    unknown = client.post("/v1/chat/completions", json={**CHAT_BODY, "model": "ghost"})
    hidden = client.post("/v1/chat/completions", json={**CHAT_BODY, "model": "hidden"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "model_not_served")


def test_api_keys_are_enforced_except_on_health(box):
    client = box[0]
    router_mod.api.state.api_key_hashes = (hash_key("k-123"),)
    try:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "Bearer k-123"}).status_code == 200
    finally:
        router_mod.api.state.api_key_hashes = ()


def test_after_one_request_through_the_manager_a_ready_model_is_served_on_the_fast_path(box):
    client, manager, serve, _, replicas, router = box
    client.portal.call(use, manager, "a")
    first = client.post("/v1/chat/completions", json=CHAT_BODY)
    tickets_after_first = dict(manager.models["a"].tickets)
    second = client.post("/v1/chat/completions", json=CHAT_BODY)
    assert first.status_code == second.status_code == 200 and second.json()["choices"][0]["message"]["content"] == "hi"
    assert tickets_after_first == {} and manager.models["a"].tickets == {}  # released
    assert router.leases.usage()["a"]["in_flight"] == 0 and router.leases.begin("a")  # leased


def test_an_engine_failure_is_answered_without_internals(box):
    client, manager, _, _, replicas, _ = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen([], error=RAY_FAILURE))
    response = client.post("/v1/chat/completions", json=CHAT_BODY)
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "model_error" and int(response.headers["Retry-After"]) >= 1
    assert error["message"] == ("model 'a' failed while answering: EngineDeadError: EngineCore encountered an issue. "
                                "See stack trace (above).")
    assert replicas["a"].calls == 2  # tried once more after asking the manager to look at the model


def test_a_request_that_meets_a_dead_engine_gets_the_loading_contract_and_then_its_answer(box):
    client, manager, serve, dead, replicas, _ = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen([], error=RAY_FAILURE), Gen([Body(CHAT)]))
    dead.pids.add(manager.models["a"].processes[1].pid)  # its engine has just died; the watchdog has not ticked
    response = client.post("/v1/chat/completions", json=CHAT_BODY)
    assert response.status_code == 200, response.text
    assert manager.counters.crashes == {"a": 1} and serve.deploys == ["a", "a"]


def test_a_streaming_request_during_a_restart_gets_restarting_heartbeats_then_tokens(box):
    client, manager, serve, dead, replicas, _ = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen(stream_items()))
    serve.polls = 10  # the reload takes ~10 polls of 20 ms
    dead.pids.add(manager.models["a"].pids[0])
    client.portal.call(manager.watch_once)
    with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200
    beats = [line for line in lines if line.startswith(": restarting a (")]
    assert beats and lines.index(beats[-1]) < lines.index(stream_items()[0].strip())
    assert lines[-1] == "data: [DONE]"


def test_a_streaming_request_during_an_unload_waits_for_the_reload(box):
    client, manager, serve, _, replicas, _ = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen(stream_items()))
    serve.delete_gate = threading.Event()
    unloading = client.portal.start_task_soon(manager.unload, "a")
    wait_for(lambda: manager.models["a"].state.value == "unloading", 5, "a to be unloading", every_s=0.01)
    threading.Timer(0.3, serve.delete_gate.set).start()
    with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    unloading.result(10)
    assert not messages_in(lines), lines  # before: 503 "could not be loaded: unknown reason"
    assert any(line.startswith(": loading a (") for line in lines) and lines[-1] == "data: [DONE]"
    assert serve.deploys == ["a", "a"]


def test_an_engine_that_dies_mid_stream_ends_the_stream_with_a_clean_error_and_done(box):
    client, manager, _, _, replicas, _ = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen(stream_items(), error=RAY_FAILURE, fail_after=2))
    with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    # vLLM's own error event is another test; here the replica's connection drops (its process died)
    assert messages_in(lines) == ["model 'a' failed while answering: the replica closed the connection"]


def test_when_the_manager_is_down_requests_get_503_and_retry_after(box):
    client, manager, _, _, _, router = box
    router.manager.down = True
    response = client.post("/v1/chat/completions", json=CHAT_BODY)
    listed = client.get("/v1/models")
    assert response.status_code == listed.status_code == 503
    assert response.json()["error"]["code"] == "manager_unavailable" and response.headers["Retry-After"] == "2"
    assert "actor" not in response.json()["error"]["message"].lower()


@pytest.mark.parametrize("cold", [False, True], ids=["ready", "after-heartbeats"])
def test_a_client_that_disconnects_mid_stream_cancels_its_generation(box, cold):
    _, manager, _, _, replicas, router = box
    gen = Gen(stream_items(50), delay_s=0.02)
    replicas["a"] = Replica(gen)  # the first call gets this very Gen

    async def scenario():
        if not cold:
            await use(manager, "a")
        first_chunk, sent = asyncio.Event(), []

        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": json.dumps({**CHAT_BODY, "stream": True}).encode(),
                        "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and b"data: {" in message.get("body", b""):
                first_chunk.set()

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "root_path": "", "query_string": b"", "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1:8000")],
                 "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555)}
        await asyncio.wait_for(router_mod.api(scope, receive, send), 5)
        await asyncio.sleep(0.05)  # the release is a fire-and-forget call
        return manager.models["a"].in_flight()

    assert asyncio.run(scenario()) == 0
    assert gen.cancelled and gen.sent < 10  # stopped, not generated to the end


def test_an_error_event_inside_the_models_own_stream_is_rewritten_to_name_the_model(box):
    client, manager, _, _, replicas, _ = box
    client.portal.call(use, manager, "a")
    vllm_error = ('data: {"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the '
                  'root cause.", "type": "InternalServerError", "param": null, "code": 500}}\n\n')
    replicas["a"] = Replica(Gen([stream_items()[0], vllm_error, "data: [DONE]\n\n"]))
    with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert messages_in(lines) == ["model 'a' failed while answering: EngineCore encountered an issue. See stack "
                                  "trace (above) for the root cause."]
    assert json.loads(lines[1][6:])["error"]["code"] == "model_error" and lines[-1] == "data: [DONE]"


def test_v1_models_answers_from_the_pushed_snapshot_while_every_model_is_settled(box):
    client, manager, _, _, _, router = box
    asked = []
    status = manager.status

    async def counted():
        asked.append(1)
        return await status()

    manager.status = counted
    first = client.get("/v1/models").json()
    again = client.get("/v1/models").json()
    assert first == again and len(asked) == 1  # the second from the snapshot: no manager call
    views = client.portal.call(status)["models"]
    client.portal.call(router.models_changed, [{**v, "state": "loading"} if v["id"] == "a" else v for v in views])
    assert {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}["a"] == "unloaded"
    assert len(asked) == 2  # a model in motion (its GPUs, its progress): the manager is asked


def test_a_reloaded_models_new_port_replaces_the_pool_of_the_old_one():
    cls = router_mod.Router.func_or_class
    router = cls.__new__(cls)
    router._setup(router_mod.RouterConfig())
    router._learn({"id": "a", "endpoint": {"host": "127.0.0.1", "port": 40001}})
    assert router._upstream("a").port == 40001
    router._learn({"id": "a", "endpoint": {"host": "127.0.0.1", "port": 40002}})  # a new replica after a restart
    assert router._upstream("a").port == 40002 and list(router._upstreams) == [("127.0.0.1", 40002)]


def test_requests_in_flight_end_with_an_error_at_once_when_the_models_replica_is_gone(box):
    """Its node was lost (or its engine died): the manager's push ends them, not their deadline."""
    client, manager, _, _, replicas, router = box
    client.portal.call(use, manager, "a")
    replicas["a"] = Replica(Gen(stream_items(200), delay_s=0.05))  # ~10 s of tokens
    views = client.portal.call(manager.status)["models"]
    lines = []
    with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if len(lines) == 2:
                client.portal.call(router.models_changed, [{**v, "state": "unloaded"} for v in views])
    assert len(lines) < 20 and lines[-1] == "data: [DONE]"
    assert messages_in(lines) == ["model 'a' failed while answering: the replica closed the connection"]
