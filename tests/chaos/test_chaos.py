"""Faults on a real box (Ray Serve + vLLM CPU build): what clients and operators see.

Order matters (one box, see conftest.py): tiny-a is loaded first and crashed twice, the router
and the manager are killed with tiny-a ready and tiny-b loading, then reconciles overlap, a crowd
of cold requests loads tiny-c (evicting an idle model), a client leaves mid-stream, and tiny-c
is unloaded while a stream asks for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time

import httpx
import pytest
import ray

from app.devtools.sandbox import control, ensure_ready, wait_for
from app.registry.edits import add_model, remove_model, update_model
from app.registry.schema import ModelEntry
from app.registry.store import RegistryStore
from tests.chaos.conftest import (INTERNALS, chat, clean, engine_info, engine_pid, events, manager, manager_pid,
                                  metric, now, router_pid, generated_tokens, states, status)

pytestmark = pytest.mark.chaos
STREAM = {"max_tokens": 480, "ignore_eos": True, "stream": True}


def stream_lines(url: str, model: str, started: threading.Event | None = None, **extra) -> tuple[list[str], float]:
    """A streaming chat; returns its non-empty lines and when it ended (monotonic)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **STREAM, **extra}
    lines = []
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    if started is not None and line.startswith("data: {"):
                        started.set()
    except httpx.HTTPError as exc:
        lines.append(f"<connection: {type(exc).__name__}>")
    return lines, now()


def test_an_idle_engine_killed_is_noticed_at_once_and_reloaded_by_the_manager(box, url):
    ensure_ready(url, "tiny-a", box)
    before = engine_info("tiny-a")
    os.kill(before["processes"][0]["pid"], signal.SIGKILL)
    killed = now()
    wait_for(lambda: states(url)["tiny-a"] == "restarting", 5, "tiny-a to be restarting", every_s=0.1)
    noticed = now() - killed
    lines, _ = stream_lines(url, "tiny-a", max_tokens=4, ignore_eos=False)  # the loading contract, then tokens
    assert noticed < 2.0
    assert any(line.startswith(": restarting tiny-a (") for line in lines), lines[:3]
    assert lines[-1] == "data: [DONE]" and not [line for line in lines if '"error"' in line]
    assert states(url)["tiny-a"] == "ready"
    assert engine_info("tiny-a")["pid"] != before["pid"]  # a new replica, deployed by the manager
    assert metric(url, "llmbox_engine_crashes_total", model="tiny-a") == 1
    assert metric(url, "llmbox_model_loads_total", model="tiny-a", result="ok") == 2
    crash = events(box, "engine_crashed")[0]
    assert (crash["model"], crash["process"], crash["signal"], crash["exit_code"]) == ("tiny-a", "engine", "SIGKILL", -9)


def test_an_engine_killed_mid_stream_ends_every_stream_with_an_error_event_and_done(box, url):
    ensure_ready(url, "tiny-a", box)
    started = [threading.Event() for _ in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(stream_lines, url, "tiny-a", s) for s in started]
        for s in started:
            assert s.wait(120), "a stream never started"
        os.kill(engine_pid("tiny-a"), signal.SIGKILL)
        killed = now()
        results = [f.result(timeout=60) for f in streams]
    for lines, ended in results:
        assert ended - killed < 2.0
        assert lines[-1] == "data: [DONE]"
        errors = [line for line in lines if line.startswith('data: {"error"')]
        assert len(errors) == 1 and "model 'tiny-a'" in errors[0] and not INTERNALS.search(errors[0]), errors
    wait_for(lambda: metric(url, "llmbox_engine_crashes_total", model="tiny-a") == 2, 5, "the crash to be counted",
             every_s=0.1)
    wait_for(lambda: states(url)["tiny-a"] == "ready", 300, "tiny-a to be reloaded")


def test_a_killed_router_replica_is_replaced_and_its_counted_requests_are_dropped(box, url):
    assert states(url)["tiny-b"] == "unloaded"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stream_lines, url, "tiny-b")  # counted in through this router, waiting for tiny-b
        wait_for(lambda: next(m for m in status()["models"] if m["id"] == "tiny-b")["in_flight"] == 1, 30,
              "the request to be counted in")
        os.kill(router_pid(), signal.SIGKILL)
        lines, _ = waiting.result(timeout=120)
    assert lines[-1].startswith("<connection:") or lines[-1] == "data: [DONE]"  # cut off cleanly
    wait_for(lambda: _health(url), 120, "a new router replica on the port")
    wait_for(lambda: next(m for m in status()["models"] if m["id"] == "tiny-b")["in_flight"] == 0, 15,
          "the dead router's request to be dropped")
    assert chat(url, "tiny-a").status_code == 200


def _health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_manager_comes_back_and_keeps_the_healthy_models(box, url):
    wait_for(lambda: states(url)["tiny-b"] == "ready", 300, "tiny-b to load")
    assert chat(url, "tiny-a").status_code == 200  # the router holds a lease on tiny-a now
    pids = {m: engine_info(m)["pid"] for m in ("tiny-a", "tiny-b")}
    os.kill(manager_pid(box), signal.SIGKILL)
    fast = chat(url, "tiny-a", timeout=30)  # the fast path does not need the manager
    wait_for(lambda: _status_or_none() is not None, 60, "the manager to answer again")
    assert fast.status_code == 200
    assert states(url) == {"tiny-a": "ready", "tiny-b": "ready", "tiny-c": "unloaded"}
    assert {m: engine_info(m)["pid"] for m in pids} == pids  # adopted, not reloaded
    assert {e["model"] for e in events(box, "model_adopted")} == {"tiny-a", "tiny-b"}
    unloaded = httpx.post(f"{url}/models/unload", json={"model": "tiny-b"}, headers=control(box), timeout=120)  # revocation works again
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"


def _status_or_none():
    try:
        return ray.get(manager().status.remote(), timeout=5)
    except Exception:  # noqa: BLE001 - restarting
        return None


def test_twenty_pairs_of_overlapping_reconciles_apply_the_newest_registry(box, url):
    store = RegistryStore(box.registry_path)
    pid_a = engine_info("tiny-a")["pid"]
    results = []
    for i in range(20):
        revision = store.read().revision
        if i % 2 == 0:
            store.edit(revision, lambda body: add_model(body, ModelEntry(id="ghost", source="/nonexistent", serve=True)))
        else:
            store.edit(revision, lambda body, i=i: (remove_model(body, "ghost"),
                                                    update_model(body, "tiny-c", {"idle_timeout_s": 100 + i})))
        pair = [manager().reconcile.remote(), manager().reconcile.remote()]
        results += ray.get(pair, timeout=120)
    final = store.read()
    assert all(r["revision"] <= final.revision for r in results) and results[-1]["revision"] == final.revision
    assert not [a for r in results for a in r["actions"].values() if a.startswith("error")]
    views = {m["id"]: m for m in status()["models"]}
    assert "ghost" not in views and views["tiny-c"]["idle_timeout_s"] == 119
    assert engine_info("tiny-a")["pid"] == pid_a  # untouched


def test_a_hundred_concurrent_requests_to_an_unloaded_model_cause_one_load(box, url):
    assert states(url)["tiny-c"] == "unloaded"
    loads = metric(url, "llmbox_model_loads_total", model="tiny-c", result="ok")
    listing, stop = [], threading.Event()

    def watch_models():
        while not stop.is_set():
            started = now()
            httpx.get(f"{url}/v1/models", timeout=30).raise_for_status()
            listing.append(now() - started)
            time.sleep(0.2)

    async def crowd():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=200)) as client:
            body = {"model": "tiny-c", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(100)))

    watcher = threading.Thread(target=watch_models)
    watcher.start()
    try:
        responses = asyncio.run(crowd())
    finally:
        stop.set()
        watcher.join()
    codes = [r.status_code for r in responses]
    documented = [r for r in responses if r.status_code == 503 and r.json()["error"]["code"] == "model_loading"]
    assert codes.count(200) + len(documented) == 100, {c: codes.count(c) for c in set(codes)}
    assert all(clean(r) for r in responses)
    assert metric(url, "llmbox_model_loads_total", model="tiny-c", result="ok") == loads + 1
    assert max(listing) < 1.0, f"GET /v1/models took up to {max(listing):.2f} s"


def test_a_client_that_disconnects_mid_stream_stops_its_generation(box, url):
    ensure_ready(url, "tiny-c", box)
    # 4 x 480 tokens: several seconds of generation on 2 cores, if nothing stops it.
    body = {"model": "tiny-c", "messages": [{"role": "user", "content": "hi"}], **STREAM, "n": 4}
    before = generated_tokens("tiny-c")
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        chunks = 0
        for line in response.iter_lines():
            chunks += line.startswith("data: {")
            if chunks == 3:
                break
    time.sleep(1)  # within a second or two of the disconnect the engine has stopped generating for it...
    stopped_at = generated_tokens("tiny-c")
    time.sleep(1)
    assert generated_tokens("tiny-c") == stopped_at  # ...so the count no longer moves
    assert stopped_at - before < 4 * 480 / 2  # far short of what was asked for
    wait_for(lambda: next(m for m in status()["models"] if m["id"] == "tiny-c")["in_flight"] == 0, 5, "in flight 0")


def test_a_streaming_request_during_an_unload_waits_for_the_reload(box, url):
    ensure_ready(url, "tiny-c", box)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        unload = pool.submit(httpx.post, f"{url}/models/unload", json={"model": "tiny-c"}, headers=control(box),
                             timeout=120)
        wait_for(lambda: states(url)["tiny-c"] == "unloading", 30, "tiny-c to be unloading", every_s=0.02)
        lines, _ = stream_lines(url, "tiny-c", max_tokens=4, ignore_eos=False)
        assert unload.result().status_code == 200
    assert not [line for line in lines if '"error"' in line], lines  # before: "could not be loaded: unknown reason"
    assert any(line.startswith(": loading tiny-c (") for line in lines) and lines[-1] == "data: [DONE]"
    assert states(url)["tiny-c"] == "ready"
