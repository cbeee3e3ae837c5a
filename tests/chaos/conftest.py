"""One real box for the chaos suite: Ray Serve + vLLM (CPU build), tiny chat models, its own marker.

Each test breaks something on purpose (kill -9 of an engine, a router replica, the manager
actor; overlapping reconciles; a crowd of cold requests; a client that leaves) and asserts what a
user or operator would notice. The tests share the box (a model load costs ~25 s on 2 cores) and
each one states the residency it starts from.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import psutil
import pytest
import ray
from ray import serve

from app import ray_head
from app.devtools.sandbox import make_box, running, tiny_entry
from app.engines import serve_apps
from app.engines.llm_config import DEPLOYMENT_NAME, app_name
from app.events import EventLog
from app.lifecycle import actor

# What a client may never see in an error: ANSI codes, tracebacks, Ray ids, pids.
INTERNALS = re.compile(r"\x1b\[|Traceback|File \"|actor_id|[0-9a-f]{24,}|pid=\d+|ray::", re.I)


@pytest.fixture(scope="package")
def box():
    entries = "".join(tiny_entry(m, Path("{tiny}")) for m in ("tiny-a", "tiny-b", "tiny-c"))
    settings = make_box(Path("/tmp") / f"lbc{os.getpid()}", entries, load_wait_s=240, load_timeout_s=300,
                        cpu_memory_budget_gb=7.0)  # two tiny models (~2.2 GB each) fit, not three
    with running(settings):
        yield settings


@pytest.fixture(scope="package")
def url(box):
    return f"http://127.0.0.1:{box.serve_port}"


def states(url: str) -> dict[str, str]:
    return {m["id"]: m["state"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}


def chat(url: str, model: str, timeout: float = 300, **extra) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def metric(url: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def engine_info(model: str) -> dict:
    return serve_apps.engine_info(model)


def engine_pid(model: str) -> int:
    return engine_info(model)["processes"][0]["pid"]


def generated_tokens(model: str) -> float:
    """vLLM's own count of the tokens the engine generated, read from the model replica.

    (Its ``vllm:num_requests_running`` gauge stays 0 in ray.serve.llm replicas here: the
    scheduler's stats do not reach the replica's Prometheus logger, so the token counter it is.)
    """
    handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app_name(model))
    text = handle.metrics.remote().result(timeout_s=10)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


def router_pid() -> int:
    return serve_apps.snapshot()["router"].replicas("Router")[0].pid


def manager_pid(settings) -> int:
    for pid in ray_head.pids(settings):
        try:
            if psutil.Process(pid).name().startswith("ray::ManagerAct"):
                return pid
        except psutil.Error:
            continue
    raise AssertionError("no manager actor process")


def events(settings, kind: str) -> list[dict]:
    return EventLog(settings.state_dir / "events.jsonl").read(kind=kind)


def manager():
    return actor.handle()


def status() -> dict:
    return ray.get(manager().status.remote())


def clean(response: httpx.Response) -> bool:
    """The error in a response says nothing internal."""
    return not INTERNALS.search(response.text)


def now() -> float:
    return time.monotonic()
