"""Two real Ray nodes on this machine (the head on 127.0.0.2, a worker on 127.0.0.3, each with its
own Ray temp dir and a CPU budget that holds one tiny model): placement across nodes, eviction
that stays on its node, and a worker node lost.

Real Ray Serve + vLLM (CPU build); the worker joins the head the way ``./start.sh join`` does
(app/devtools/sandbox.py ``joined``). Both nodes share the models folder, as a real cluster
shares it over NFS. Ray listens on every interface in multi-node mode (Ray's own choice, behind
the token); the test's traffic goes only to loopback addresses.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
import ray

from app import ray_head
from app.devtools.sandbox import joined, make_box, running, tiny_entry, wait_for, worker_of
from app.events import EventLog
from app.lifecycle import actor

pytestmark = pytest.mark.slow
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
BUDGET_GB = 3.0  # one tiny model (2.3 GB) per node


@pytest.fixture(scope="module")
def cluster():
    base = Path("/tmp") / f"lbn{os.getpid()}"
    entries = (tiny_entry("chat-a", Path("{tiny}")) + tiny_entry("chat-b", Path("{tiny}"))
               + tiny_entry("chat-c", Path("{tiny}")) + "      nodes: [head]\n")
    head = make_box(base / "head", entries, cluster_ip=HEAD_IP, node_name="head", cpu_memory_budget_gb=BUDGET_GB,
                    load_wait_s=240, load_timeout_s=300)
    worker = worker_of(head, base / "w1", "w1", WORKER_IP, cpu_memory_budget_gb=BUDGET_GB)
    with running(head), joined(head, worker):
        yield head, worker


def manager(head):
    ray_head.connect(head)
    return actor.handle()


def views(head) -> dict[str, dict]:
    """Every model as the manager shows it (with the node it is placed on)."""
    return {m["id"]: m for m in ray.get(manager(head).status.remote(), timeout=60)["models"]}


def chat(head, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"http://127.0.0.1:{head.serve_port}/v1/chat/completions", json=body, timeout=300)


def test_the_second_model_goes_to_the_worker_and_both_answer_through_the_head(cluster):
    head, worker = cluster
    nodes = {n["name"]: n for n in ray.get(manager(head).nodes.remote(), timeout=60)}
    assert set(nodes) == {"head", "w1"} and nodes["head"]["head"] and nodes["w1"]["address"] == WORKER_IP
    assert [d["total_gb"] for d in nodes["w1"]["devices"]] == [BUDGET_GB]  # the worker's own budget

    assert chat(head, "chat-a").status_code == 200
    assert chat(head, "chat-b").status_code == 200  # the head is full: the worker has room
    models = views(head)
    assert (models["chat-a"]["node"], models["chat-b"]["node"]) == ("head", "w1")
    replica = models["chat-b"]["pids"][0]
    assert f"{WORKER_IP}:" in " ".join(f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(replica).net_connections()
                                       if c.status == psutil.CONN_LISTEN)  # it listens on the worker's address


def test_eviction_on_the_head_does_not_touch_the_workers_model(cluster):
    head, _ = cluster
    assert chat(head, "chat-c").status_code == 200  # pinned to the head: chat-a makes room there
    models = views(head)
    assert (models["chat-a"]["state"], models["chat-c"]["node"]) == ("unloaded", "head")
    assert (models["chat-b"]["state"], models["chat-b"]["node"]) == ("ready", "w1")
    assert chat(head, "chat-b").status_code == 200


def test_a_lost_worker_unloads_its_model_and_the_next_request_reloads_it_on_the_head(cluster):
    head, worker = cluster
    raylet = next(p for p in map(psutil.Process, ray_head.pids(worker)) if p.name() == "raylet")
    killed = time.monotonic()
    os.kill(raylet.pid, signal.SIGKILL)
    wait_for(lambda: views(head)["chat-b"]["state"] == "unloaded", 5, "chat-b unloaded after its node died",
             every_s=0.2)
    lost_after = time.monotonic() - killed
    model = views(head)["chat-b"]
    assert "its node w1 was lost" in model["last_error"], model
    lost = EventLog(head.state_dir / "events.jsonl").read(kind="node_lost")
    assert [(e["model"], e["node"]) for e in lost] == [("chat-b", "w1")]
    print(f"chat-b unloaded {lost_after:.1f} s after the worker's raylet was killed")

    assert chat(head, "chat-b").status_code == 200  # reloaded on the head, where idle chat-c made room
    models = views(head)
    assert (models["chat-b"]["state"], models["chat-b"]["node"]) == ("ready", "head")
    assert models["chat-c"]["state"] == "unloaded"
