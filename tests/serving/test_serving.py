"""The serving plane end to end: real Ray Serve, real vLLM (CPU build), the openai client.

One cluster for the whole module (each model load costs ~30 s on 2 cores); the tests run in
file order and each states the residency it expects. Models: the packaged embedding model
(always on), three tiny chat models on one memory budget that fits two of them, one with a
5 s idle timeout, one with a broken source, one not served.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

import anthropic
import httpx
import openai
import psutil
import pytest
import ray
from ray import serve

from app.devtools.sandbox import EMBED_ENTRY, control, free_port, make_box, running, tiny_entry, wait_for
from app.lifecycle import actor
from app.registry.edits import add_model, update_model
from app.registry.schema import ModelEntry
from app.registry.store import RegistryStore
from app import ray_head
from app.serving import router
from app.web import shared_secret
from app.web.shared_secret import HEADER as SECRET_HEADER
from app.serving.keys import hash_key

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"
STRICT_PORT = free_port()  # the second router's own port


@pytest.fixture(scope="module")
def box():
    entries = EMBED_ENTRY + "".join(tiny_entry(m, Path("{tiny}")) for m in ("tiny-a", "tiny-b", "tiny-c"))
    entries += tiny_entry("tiny-idle", Path("{tiny}"), idle_timeout_s=5)
    entries += "    - id: broken\n      source: /nonexistent/weights\n      serve: true\n      memory_gb: 1\n"
    entries += "    - id: hidden\n      source: org/hidden\n"
    settings = make_box(
        Path("/tmp") / f"lbs{os.getpid()}", entries, load_wait_s=180, load_timeout_s=300,
        cpu_memory_budget_gb=7.0,  # the embedding model (~1.4 GB) + two tiny models (~2.2 GB each)
    )
    with running(settings):
        # The same router with a short load wait and API keys on a port of its own, for the
        # tests that need those.
        serve.run_many([serve.RunTarget(
            router.build(router.RouterConfig(port=STRICT_PORT, api_key_hashes=(hash_key(KEY),),
                                             load_wait_s=1,
                                             ray_token_path=str(ray_head.auth_token_path(settings)))),
            name="router-strict", route_prefix=None)])
        yield settings


@pytest.fixture(scope="module")
def url(box):
    return f"http://127.0.0.1:{box.serve_port}"


@pytest.fixture(scope="module")
def strict_url(box):
    return f"http://127.0.0.1:{STRICT_PORT}"


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def manager(box):
    return actor.handle()


@pytest.fixture(scope="module")
def embed_pid(manager):
    return ray.get(manager.replica_pids.remote("embed"))


def states(url) -> dict[str, str]:
    return {m["id"]: m["state"] for m in httpx.get(f"{url}/v1/models").json()["data"]}


def metric(url, name, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def chat(client, model, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=8, **kwargs)


def test_models_lists_every_served_model_with_its_state(url, client, embed_pid):
    assert embed_pid, "the always-on model runs from the start"
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {"embed", "tiny-a", "tiny-b", "tiny-c", "tiny-idle", "broken"}  # not "hidden"
    assert states(url)["embed"] == "ready" and states(url)["tiny-a"] == "unloaded"


def test_embeddings(client):
    result = client.embeddings.create(model="embed", input=["a cat", "a dog"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384


def test_unknown_and_unserved_models_are_not_found(client):
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(client, "no-such-model")
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as hidden:
        chat(client, "hidden")
    assert "not served" in hidden.value.body["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"messages": []}', b'{"model": "embed", "input": 5}'])
def test_malformed_bodies_get_400_in_the_openai_shape(url, body):
    path = "/v1/embeddings" if b"input" in body else "/v1/chat/completions"
    response = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_three_concurrent_cold_requests_cause_exactly_one_load(url, client):
    assert states(url)["tiny-a"] == "unloaded"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: chat(client, "tiny-a"), range(3)))
    assert all(r.choices[0].message.content is not None and r.usage.completion_tokens > 0 for r in replies)
    assert states(url)["tiny-a"] == "ready"
    assert metric(url, "llmbox_model_loads_total", model="tiny-a", result="ok") == 1
    assert metric(url, "llmbox_queue_wait_seconds_count", model="tiny-a") == 3


def test_streamed_chat_and_completion(client):
    chunks = list(chat(client, "tiny-a", stream=True))
    assert len(chunks) > 1 and chunks[-1].choices[0].finish_reason in ("length", "stop")
    completion = client.completions.create(model="tiny-a", prompt="hello", max_tokens=5)
    assert completion.choices[0].text and completion.usage.completion_tokens == 5


def test_every_route_of_vllms_app_answers_through_8000_for_a_model_of_its_task(url, client):
    """The replica serves vLLM's own OpenAI app, so its routes come through the router as they are."""
    assert client.completions.create(model="tiny-a", prompt="hi", max_tokens=3).usage.completion_tokens == 3
    response = client.responses.create(model="tiny-a", input="hi", max_output_tokens=3)
    assert response.status in ("completed", "incomplete") and response.output
    root = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)  # vLLM's routes outside /v1
    tokens = root.post("/tokenize", body={"model": "tiny-a", "prompt": "hi"}, cast_to=httpx.Response).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    text = root.post("/detokenize", body={"model": "tiny-a", "tokens": tokens["tokens"]}, cast_to=httpx.Response)
    assert "hi" in text.json()["prompt"]
    claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120)
    message = claude.messages.create(model="tiny-a", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert message.type == "message" and message.usage.output_tokens == 3
    with claude.messages.stream(model="tiny-a", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"
    # The pooling routes of an embedding model.
    rerank = client.post("/rerank", body={"model": "embed", "query": "a cat", "documents": ["a dog", "a car"]},
                         cast_to=httpx.Response).json()
    assert len(rerank["results"]) == 2
    score = client.post("/score", body={"model": "embed", "text_1": "a cat", "text_2": "a dog"},
                        cast_to=httpx.Response).json()
    assert 0 < score["data"][0]["score"] <= 1
    # A route the model's task has not: vLLM's 404, naming the model.
    with pytest.raises(openai.NotFoundError) as wrong_task:
        chat(client, "embed")
    assert "'embed'" in wrong_task.value.body["message"]


def test_a_replica_port_answers_only_the_router(manager, box):
    endpoint = next(m["endpoint"] for m in ray.get(manager.status.remote())["models"] if m["id"] == "embed")
    address = f"http://{endpoint['host']}:{endpoint['port']}/v1/embeddings"
    for headers in ({}, {SECRET_HEADER: "0" * 64}):
        response = httpx.post(address, json={"model": "embed", "input": "a cat"}, headers=headers)
        assert response.status_code == 403 and response.json()["error"]["code"] == "not_the_router"
    # The secret the router sends is derived from the box's Ray token: with it, the replica answers.
    secret = shared_secret.replica_secret(ray_head.auth_token_path(box))
    answer = httpx.post(address, json={"model": "embed", "input": "a cat"}, headers={SECRET_HEADER: secret})
    assert answer.status_code == 200 and answer.json()["data"][0]["embedding"]


def test_the_serving_path_runs_at_normal_priority(manager, embed_pid):
    """Ray's default niceness 15 for its workers would give the cores to anything else on the host."""
    router_pid = next(p for p in psutil.process_iter(["cmdline"]) if "ServeReplica:router:Router" in
                      " ".join(p.info["cmdline"] or []))
    # The box's processes keep the niceness of whoever started it (this test), not Ray's +15.
    assert psutil.Process(embed_pid[0]).nice() == router_pid.nice() == os.nice(0)


def test_a_streaming_cold_request_gets_heartbeats_until_its_first_token(url):
    lines = []
    body = {"model": "tiny-b", "stream": True, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    heartbeats = [line for line in lines if line.startswith(": loading tiny-b")]
    data = [line for line in lines if line.startswith("data: ")]
    assert heartbeats, lines[:5]
    assert lines.index(heartbeats[-1]) < lines.index(data[0])  # heartbeats come before any token
    assert data[-1] == "data: [DONE]"


def until_less_valuable(manager, model: str, than: str) -> None:
    """Wait until ``model`` idles long enough to be worth less than ``than`` once ``than`` is used:
    a model's value is its last load time per second idle (app/lifecycle/admission.py), and on a
    busy 2-core machine one tiny model's load can take several times another's."""
    views = {m["id"]: m for m in ray.get(manager.status.remote())["models"]}
    ratio = views[model]["last_load_s"] / views[than]["last_load_s"]
    idle_since = max(views[model]["last_used"] or 0, views[model]["since"])
    # ``than`` used just before the next load is at most ~2 s idle then: 3x that leaves a margin.
    time.sleep(max(0.0, idle_since + 3 * 2 * ratio - time.time()))


def test_a_non_streaming_request_waits_a_bounded_time_then_gets_503_with_retry_after(url, strict_url, manager):
    # tiny-a and tiny-b fill the budget; tiny-a is used last, so tiny-b is the least valuable.
    until_less_valuable(manager, "tiny-b", than="tiny-a")
    httpx.post(f"{url}/v1/completions", json={"model": "tiny-a", "prompt": "x", "max_tokens": 1}, timeout=60)
    started = time.monotonic()
    response = httpx.post(f"{strict_url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "tiny-c", "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert time.monotonic() - started < 15
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    loading = response.json()["error"]["loading"]
    assert loading["state"] == "loading" and loading["elapsed_s"] >= 0 and "expected_s" in loading


def test_loading_a_third_model_evicts_the_least_valuable_idle_one(url):
    wait_for(lambda: states(url)["tiny-c"] == "ready", 300, "tiny-c to load")
    now = states(url)
    assert (now["tiny-a"], now["tiny-b"], now["embed"]) == ("ready", "unloaded", "ready")
    assert metric(url, "llmbox_model_unloads_total", model="tiny-b", reason="evicted") == 1


def test_eviction_never_takes_a_model_with_a_request_in_flight(url, client, manager):
    got = ray.get(manager.acquire.remote("tiny-a"))  # what the router does when a request starts
    assert got["outcome"] == "ready"
    try:
        time.sleep(2)
        chat(client, "tiny-c")  # tiny-c is now the more recently used: tiny-a would go first, but is busy
        chat(client, "tiny-b")  # needs room: must evict tiny-c, never the busy tiny-a
        now = states(url)
        assert (now["tiny-a"], now["tiny-b"], now["tiny-c"]) == ("ready", "ready", "unloaded")
    finally:
        ray.get(manager.release.remote("tiny-a", got["ticket"]))


def router_usage() -> dict:
    """The router's own counts of the requests it serves on its fast path (leases)."""
    return serve.get_deployment_handle("Router", app_name="router").usage.remote().result()["models"]


def test_eviction_never_takes_a_model_busy_on_the_routers_fast_path(box, url, client):
    chat(client, "tiny-a")
    chat(client, "tiny-a")  # tiny-a is leased: this one never asked the manager
    assert router_usage()["tiny-a"]["in_flight"] == 0
    chat(client, "tiny-b")  # tiny-a is now the least recently used: the natural victim
    body = {"model": "tiny-a", "max_tokens": 480, "ignore_eos": True, "n": 4,
            "messages": [{"role": "user", "content": "hi"}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=300)
        wait_for(lambda: router_usage()["tiny-a"]["in_flight"] == 1, 30, "the long request on the fast path")
        evicted_b = metric(url, "llmbox_model_unloads_total", model="tiny-b", reason="evicted")
        assert httpx.post(f"{url}/models/load", json={"model": "tiny-c"}, headers=control(box), timeout=60).status_code == 200
        assert long.result().status_code == 200
    wait_for(lambda: states(url)["tiny-c"] == "ready", 300, "tiny-c to load")
    now = states(url)
    assert (now["tiny-a"], now["tiny-b"]) == ("ready", "unloaded")  # the busy tiny-a stayed
    assert metric(url, "llmbox_model_unloads_total", model="tiny-b", reason="evicted") == evicted_b + 1


def test_idle_timeout_unloads_the_model_and_its_engine_processes_end(url, client, manager):
    chat(client, "tiny-idle")
    pids = ray.get(manager.replica_pids.remote("tiny-idle"))
    processes = [psutil.Process(p) for p in pids]
    processes += [c for p in processes for c in p.children(recursive=True)]
    assert len(processes) >= 2  # the replica and its vLLM engine
    wait_for(lambda: states(url)["tiny-idle"] == "unloaded", 60, "the idle reaper")
    assert metric(url, "llmbox_model_unloads_total", model="tiny-idle", reason="idle") == 1
    wait_for(lambda: not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
             30, "the engine processes to exit")


def test_the_always_on_model_survives_the_reaper_and_evictions(url, manager, embed_pid):
    assert states(url)["embed"] == "ready"
    assert ray.get(manager.replica_pids.remote("embed")) == embed_pid
    assert metric(url, "llmbox_model_unloads_total", model="embed", reason="idle") == 0


def test_a_broken_model_fails_fast_with_503_and_state_failed(url, client):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "broken")
    assert err.value.status_code == 503 and time.monotonic() - started < 120
    assert err.value.body["code"] == "model_load_failed" and "nonexistent" in err.value.body["message"]
    listed = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert listed["broken"]["state"] == "failed" and listed["broken"]["last_error"]
    # Retrying at once is answered from the failure (backoff), without a second load.
    with pytest.raises(openai.InternalServerError) as again:
        chat(client, "broken")
    assert int(again.value.response.headers["Retry-After"]) >= 1
    assert metric(url, "llmbox_model_loads_total", model="broken", result="failed") == 1


def test_reconcile_adds_a_model_without_touching_the_others(box, url, client, manager, embed_pid):
    store = RegistryStore(box.registry_path)
    rev = store.read().revision
    store.edit(rev, lambda body: add_model(body, ModelEntry(id="newcomer", source="org/newcomer", serve=True)))
    store.edit(rev + 1, lambda body: update_model(body, "tiny-b", {"serve": False}))
    result = ray.get(manager.reconcile.remote())
    assert result["revision"] == rev + 2
    assert "newcomer" in {m.id for m in client.models.list().data}
    assert ray.get(manager.replica_pids.remote("embed")) == embed_pid  # untouched
    assert states(url).get("tiny-b") is None  # no longer served: unloaded and unlisted
    with pytest.raises(openai.NotFoundError):
        chat(client, "tiny-b")


def test_manual_unload_and_load(box, url):
    # Earlier tests may have evicted tiny-a (which one goes depends on timing): load it first.
    response = httpx.post(f"{url}/models/load", json={"model": "tiny-a"}, headers=control(box), timeout=60)
    assert response.status_code == 200 and response.json()["state"] in ("loading", "ready")
    wait_for(lambda: states(url)["tiny-a"] == "ready", 300, "tiny-a to load")
    before = metric(url, "llmbox_model_unloads_total", model="tiny-a", reason="manual")
    response = httpx.post(f"{url}/models/unload", json={"model": "tiny-a"}, headers=control(box), timeout=60)
    assert response.status_code == 200 and response.json()["state"] == "unloaded"
    assert states(url)["tiny-a"] == "unloaded"
    assert metric(url, "llmbox_model_unloads_total", model="tiny-a", reason="manual") == before + 1
    response = httpx.post(f"{url}/models/load", json={"model": "tiny-a"}, headers=control(box), timeout=60)
    assert response.status_code == 200 and response.json()["state"] == "loading"
    missing = httpx.post(f"{url}/models/unload", json={"model": "ghost"}, headers=control(box), timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_api_keys_are_enforced(strict_url):
    strict = openai.OpenAI(base_url=f"{strict_url}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        strict.models.list()
    assert httpx.get(f"{strict_url}/v1/models").status_code == 401
    assert httpx.get(f"{strict_url}/metrics").status_code == 401
    assert httpx.get(f"{strict_url}/health").status_code == 200  # liveness stays open
    good = openai.OpenAI(base_url=f"{strict_url}/v1", api_key=KEY, max_retries=0, timeout=60)
    assert "embed" in {m.id for m in good.models.list().data}
