"""The router's doors, in-process (real router code, a real ModelManager over FakeServe, fake
replicas): what a web page, a stranger with some key, a slow client or a burst can and cannot do
on :8000. Each test here failed on the router before "Lock the doors"."""

import asyncio
import json

import pytest
from starlette.testclient import TestClient

from app.devtools.sandbox import wait_for
from app.serving import router as router_mod
from app.serving.keys import KeyFile
from tests.lifecycle.fakes import FakeServe, make_manager, models, use
from tests.serving.fakes import CHAT, Body, Gen, Replica, make_router, stream_items
from tests.serving.test_router import CHAT_BODY, box  # noqa: F401 - the router fixture

JSON = {"content-type": "application/json"}


def asgi_post(body: dict, path: str = "/v1/chat/completions"):
    """One request straight into the router's ASGI app (TestClient runs requests one at a time);
    returns (status, body bytes) once the response has ended."""
    async def call():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
                 "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]}
        sent, statuses, chunks = [], [], []

        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
            await asyncio.sleep(60)  # the client stays

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await router_mod.api(scope, receive, send)
        return statuses[0], b"".join(chunks)

    return call()


def test_a_cross_site_form_cannot_unload_or_chat(box):
    """A page can POST text/plain or a form without a CORS preflight; :8000 refuses both with 415."""
    client, manager = box[0], box[1]
    client.portal.call(use, manager, "a")
    form = '{"model":"a","x":"="}'
    for path in ("/models/unload", "/v1/chat/completions"):
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            refused = client.post(path, content=form, headers={"content-type": kind})
            assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_media_type"
    assert manager.models["a"].state.value == "ready"  # nothing happened


@pytest.mark.parametrize("host,status", [("evil.example", 421), ("evil.example:8000", 421),
                                         ("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200),
                                         ("10.1.2.3", 200), ("box.lan", 200)])
def test_only_host_names_the_box_answers_to_are_served(box, host, status):
    """DNS rebinding presents the attacker's own name: only IPs, localhost and listed names pass."""
    client, router = box[0], box[5]
    router_mod.configure(router_mod.RouterConfig(allowed_hosts=frozenset({"box.lan"})), router_mod.api)
    response = client.get("/v1/models", headers={"host": host})
    assert response.status_code == status, response.text
    if status == 421:
        assert response.json()["error"]["code"] == "host_not_allowed"
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 421  # everything


def test_model_control_needs_a_control_key_even_on_loopback_without_keys(box, tmp_path):
    client, manager = box[0], box[1]
    keys = KeyFile(tmp_path / "api-keys")
    router_mod.configure(router_mod.RouterConfig(keys_path=str(keys.path)), router_mod.api)
    for headers in ({}, {"Authorization": "Bearer unused"}):
        anonymous = client.post("/models/load", json={"model": "a"}, headers=headers)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "control_key_required"
        # Inference stays open, whatever placeholder key an OpenAI client must send.
        assert client.post("/v1/chat/completions", json=CHAT_BODY, headers=headers).status_code == 200
    inference = keys.add("webui", ["inference"])
    control = keys.add("ops", ["control"])  # counted at once: the file is read again when it changes
    with_inference = client.post("/models/unload", json={"model": "a"}, headers={"Authorization": f"Bearer {inference}"})
    assert with_inference.status_code == 403 and with_inference.json()["error"]["code"] == "insufficient_scope"
    assert client.post("/v1/chat/completions", json=CHAT_BODY).status_code == 401  # an inference key exists now
    unloaded = client.post("/models/unload", json={"model": "a"}, headers={"Authorization": f"Bearer {control}"})
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
    assert control not in keys.path.read_text() and keys.path.stat().st_mode & 0o777 == 0o600  # stored hashed
    keys.remove("ops")
    revoked = client.post("/models/load", json={"model": "a"}, headers={"Authorization": f"Bearer {control}"})
    assert revoked.status_code == 401


def test_a_key_limited_to_some_models_sees_and_uses_only_those(tmp_path, monkeypatch):
    manager = make_manager(tmp_path, models("a", "b"), FakeServe(), poll_interval_s=0.02)
    keys = KeyFile(tmp_path / "api-keys")
    only_a = keys.add("team-a", ["inference"], ["a"])
    make_router(monkeypatch, manager, {"a": Replica(Gen([Body(CHAT)])), "b": Replica(Gen([Body(CHAT)]))},
                keys_path=str(keys.path))
    auth = {"Authorization": f"Bearer {only_a}"}
    with TestClient(router_mod.api, base_url="http://127.0.0.1") as client:
        client.portal.call(manager.reconcile)
        assert [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]] == ["a"]
        refused = client.post("/v1/chat/completions", json={**CHAT_BODY, "model": "b"}, headers=auth)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
        assert client.get("/v1/models/b", headers=auth).status_code == 404
        assert client.post("/v1/chat/completions", json=CHAT_BODY, headers=auth).status_code == 200


def test_anthropic_clients_key_in_x_api_key_is_taken(tmp_path, monkeypatch):
    manager = make_manager(tmp_path, models("a"), FakeServe(), poll_interval_s=0.02)
    keys = KeyFile(tmp_path / "api-keys")
    key = keys.add("claude-code", ["inference"], [])
    make_router(monkeypatch, manager, {"a": Replica(Gen([Body(CHAT)]))}, keys_path=str(keys.path))
    with TestClient(router_mod.api, base_url="http://127.0.0.1") as client:
        client.portal.call(manager.reconcile)
        assert client.post("/v1/messages", json=CHAT_BODY).status_code == 401
        assert client.post("/v1/messages", json=CHAT_BODY, headers={"x-api-key": "sk-llmbox-wrong"}).status_code == 401
        assert client.post("/v1/messages", json=CHAT_BODY, headers={"x-api-key": key}).status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read(box):
    client = box[0]
    big = client.post("/v1/chat/completions", content=b"x" * 16, headers={**JSON, "content-length": str(9 << 20)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: refused once the bytes received pass 8 MiB
        for _ in range(20):
            yield b" " * (1 << 20)

    streamed = client.post("/v1/chat/completions", content=chunks(), headers=JSON)
    assert streamed.status_code == 413


@pytest.mark.parametrize("change,param", [({"n": 17}, "n"), ({"max_tokens": 65537}, "max_tokens"),
                                          ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
                                          ({"stream": "false"}, "stream"), ({"n": "5"}, "n"),
                                          ({"max_output_tokens": 70000, "path": "/v1/responses"}, "max_output_tokens")])
def test_sizes_beyond_the_caps_and_a_string_stream_get_400(box, change, param):
    client = box[0]
    path = change.pop("path", "/v1/chat/completions")
    response = client.post(path, json={**CHAT_BODY, **change})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_deeply_nested_json_gets_400_in_the_openai_shape(box):
    client = box[0]
    for depth in (100_000, 5_000):
        nested = '{"model": "a", "messages": ' + "[" * depth + "]" * depth + "}"
        response = client.post("/v1/chat/completions", content=nested, headers=JSON)
        assert response.status_code == 400, (depth, response.text[:200])
        assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_requests_beyond_the_in_flight_cap_get_503_with_retry_after(tmp_path, monkeypatch):
    manager = make_manager(tmp_path, models("a"), FakeServe(), poll_interval_s=0.02)
    make_router(monkeypatch, manager, {"a": Replica(Gen(stream_items(20), delay_s=0.05))}, max_in_flight=1)

    async def scenario():
        await manager.reconcile()
        await use(manager, "a")
        first = asyncio.ensure_future(asgi_post({**CHAT_BODY, "stream": True}))
        await asyncio.sleep(0.2)  # the stream is under way
        second = await asgi_post(CHAT_BODY)
        return await first, second

    (first_status, _), (status, body) = asyncio.run(scenario())
    assert first_status == 200
    assert status == 503 and json.loads(body)["error"]["code"] == "too_many_requests"


def test_a_request_past_its_deadline_is_cancelled_and_says_so(tmp_path, monkeypatch):
    manager = make_manager(tmp_path, models("a"), FakeServe(), poll_interval_s=0.02)
    stuck, trickle = Gen([Body(CHAT)], delay_s=5), Gen(stream_items(100), delay_s=0.05)
    replicas = {"a": Replica(stuck)}
    make_router(monkeypatch, manager, replicas, request_timeout_s=0.5)
    with TestClient(router_mod.api, base_url="http://127.0.0.1") as client:
        client.portal.call(manager.reconcile)
        client.portal.call(use, manager, "a")
        late = client.post("/v1/chat/completions", json=CHAT_BODY)
        assert late.status_code == 504 and late.json()["error"]["code"] == "request_timeout"
        wait_for(lambda: stuck.cancelled, 2, "the replica to see the router leave", every_s=0.01)
        replicas["a"] = Replica(trickle)
        with client.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as response:
            lines = [line for line in response.iter_lines() if line]
        assert '"request_timeout"' in lines[-2] and lines[-1] == "data: [DONE]"
        wait_for(lambda: trickle.cancelled, 2, "the replica to see the router leave", every_s=0.01)
        assert trickle.sent < 100
        assert manager.models["a"].in_flight() == 0


def test_requests_waiting_for_a_load_share_one_manager_call(tmp_path, monkeypatch):
    """A burst to a loading model must not occupy the manager (acquire and status stay answerable)."""
    manager = make_manager(tmp_path, models("a"), FakeServe(polls=40), poll_interval_s=0.02)  # loads in ~0.8 s
    calls = []
    wait = manager.wait

    async def counted(*args):
        calls.append(args[0])
        return await wait(*args)

    manager.wait = counted
    make_router(monkeypatch, manager, {"a": Replica(Gen([Body(CHAT)]))}, load_wait_s=10, heartbeat_s=2.0)

    async def burst():
        await manager.reconcile()
        return await asyncio.gather(*(asgi_post(CHAT_BODY) for _ in range(40)))

    async def burst_then_settle():
        got = await burst()
        await asyncio.sleep(0.1)  # the queue-wait reports are fire-and-forget
        return got

    answers = asyncio.run(burst_then_settle())
    assert [status for status, _ in answers] == [200] * 40
    assert 1 <= len(calls) <= 2, len(calls)  # one shared wait per heartbeat, not one per request
    assert manager.counters.queue_wait["a"][1] == 40  # yet every request's queue wait is counted
