"""Bring the serving plane up on a running Ray head: Serve (no proxy), the model manager, the router.

Idempotent: the manager is a named actor found again on the next call, and the router is
redeployed with byte-identical arguments, which Serve treats as "no change".
"""

from __future__ import annotations

import time

import ray
from ray import serve

from app import ray_head
from app.lifecycle import actor
from app.lifecycle.runtime import ManagerConfig
from app.serving import router
from app.serving.keys import hash_key, inference_keys
from app.settings import Settings
from app.web.hosts import allowed_names

ROUTER_APP = "router"


def manager_config(settings: Settings) -> ManagerConfig:
    from app.gpu.nvml import detect_device

    return ManagerConfig(
        registry_path=str(settings.registry_path),
        device=detect_device(settings.device),
        cache_dir=str(settings.state_dir / "vllm-cache"),
        models_dir=str(settings.models_dir),
        state_dir=str(settings.state_dir),
        cpu_memory_budget_gb=settings.cpu_memory_budget_gb,
        model_roots=tuple(str(r) for r in settings.model_roots),
        allow_remote_code=settings.allow_remote_code,
        load_timeout_s=settings.load_timeout_s,
    )


def router_config(settings: Settings) -> router.RouterConfig:
    keys = sorted(hash_key(k.get_secret_value()) for k in settings.api_keys)
    return router.RouterConfig(
        host=settings.host, port=settings.serve_port, api_key_hashes=tuple(keys),
        keys_path=str(settings.api_keys_path), keys_required=settings.binds_beyond_loopback,
        allowed_hosts=allowed_names(settings.host, settings.allowed_hosts), load_wait_s=settings.load_wait_s,
        request_timeout_s=settings.request_timeout_s, max_in_flight=settings.max_concurrent_requests,
        max_n=settings.max_n, max_tokens=settings.max_tokens_limit,
        ray_token_path=str(ray_head.auth_token_path(settings)),
    )


def check_exposure(settings: Settings) -> None:
    """Refuse to serve :8000 beyond loopback without any inference key (LLMBOX_API_KEYS or the key file)."""
    settings.check_exposure(inference_keys(settings.api_keys_path))


def up(settings: Settings) -> dict:
    """Start Serve, the manager (which loads always-on models) and the router; returns the status."""
    check_exposure(settings)
    ray_head.connect(settings)
    # No Serve proxy (and so no proxy route for the router): the router's replica listens on
    # serve_port itself, one hop less per request.
    serve.start(proxy_location="Disabled")
    manager = actor.spawn(manager_config(settings))
    ray.get(manager.start.remote())
    serve.run_many(
        [serve.RunTarget(router.build(router_config(settings)), name=ROUTER_APP, route_prefix=None)],
        wait_for_applications_running=True,
    )
    return ray.get(manager.status.remote())


def wait_for_always_on(timeout_s: float) -> dict:
    """Poll until every always-on model is ready or failed (or the time is up); returns the status."""
    manager = actor.handle()
    deadline = time.monotonic() + timeout_s
    while True:
        status = ray.get(manager.status.remote())
        pinned = [m for m in status["models"] if m["always_on"] and m["serve"]]
        settled = ("ready", "failed", "downloading", "not_downloaded")  # a download may take hours
        if all(m["state"] in settled for m in pinned) or time.monotonic() > deadline:
            return status
        time.sleep(1)
