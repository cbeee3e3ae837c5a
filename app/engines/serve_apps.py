"""The Serve executor: what the model manager asks of Ray Serve for its per-model applications.

Deploy, delete, one snapshot of every application and replica (the watchdog reads it each
second: ``get_serve_details`` costs ~3 ms here, ``serve.status()`` ~45 ms), the engine facts a
model replica reports about itself, and the engine config each application was deployed with
(kept in Ray's internal KV, which lives exactly as long as the applications do, so a restarted
manager can tell whether a running application still matches the registry).

Blocking Serve client calls; the manager runs them in a thread. Tests hand the manager a stand-in
with the same functions (tests/lifecycle/fakes.py).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from ray import serve

from app.engines.llm_config import DEPLOYMENT_NAME, Placement, app_name, build_app

_KV_NAMESPACE = b"llmbox"
ENGINE_INFO_TIMEOUT_S = 5.0
# One deploy at a time: two LLMConfig validations in parallel threads failed now and then here
# ("Invalid deployment config" from Serve's DeploymentConfig, the same config that passes alone).
_DEPLOYING = threading.Lock()


@dataclass(frozen=True)
class Replica:
    replica_id: str  # Serve's unique id of the replica (routers count requests under it)
    state: str  # STARTING, RUNNING, STOPPING, ...
    pid: int | None


@dataclass(frozen=True)
class AppInfo:
    status: str  # Serve's application status: DEPLOYING, RUNNING, DEPLOY_FAILED, UNHEALTHY, ...
    message: str  # the deployment's message; its last line names the engine's error
    deployments: dict[str, list[Replica]] = field(default_factory=dict)

    def replicas(self, deployment: str = DEPLOYMENT_NAME) -> list[Replica]:
        return self.deployments.get(deployment, [])


def deploy(model_id: str, config: dict[str, Any], key: str, placement: Placement | None) -> None:
    """Submit the model's application and return at once (the manager polls its status).

    ``key`` (its settings) and ``placement`` are kept beside it for a restarted manager."""
    from ray.experimental import internal_kv

    record = {"key": key, "placement": asdict(placement) if placement else None}
    with _DEPLOYING:
        internal_kv._internal_kv_put(f"deployed:{model_id}".encode(), json.dumps(record).encode(),
                                     namespace=_KV_NAMESPACE)
        target = serve.RunTarget(build_app(config), name=app_name(model_id), route_prefix=None)
        serve.run_many([target], wait_for_applications_running=False)


def delete(model_id: str) -> None:
    """Delete the model's application; returns when its replicas (and engines) are gone."""
    from ray.experimental import internal_kv

    serve.delete(app_name(model_id), _blocking=True)
    internal_kv._internal_kv_del(f"deployed:{model_id}".encode(), namespace=_KV_NAMESPACE)


def deployed(model_id: str) -> tuple[str, Placement | None] | None:
    """The settings key and placement the model's running application was deployed with (None if unknown)."""
    from ray.experimental import internal_kv

    value = internal_kv._internal_kv_get(f"deployed:{model_id}".encode(), namespace=_KV_NAMESPACE)
    if not value:
        return None
    record = json.loads(value)
    placement = record.get("placement")
    if not placement:
        return record["key"], None
    stages = tuple((node, tuple(gpus)) for node, gpus in placement.get("stages", ()))
    return record["key"], Placement(**{**placement, "gpus": tuple(placement["gpus"]), "stages": stages})


def snapshot() -> dict[str, AppInfo]:
    """Every Serve application now: status, message and replicas per deployment (one controller call)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    apps = {}
    for name, app in (details.get("applications") or {}).items():
        deployments, message = {}, ""
        for dep_name, dep in (app.get("deployments") or {}).items():
            deployments[dep_name] = [Replica(str(r.get("replica_id")), _plain(r.get("state")), r.get("pid"))
                                     for r in dep.get("replicas") or []]
            if dep_name == DEPLOYMENT_NAME:
                message = dep.get("message") or ""
        apps[name] = AppInfo(_plain(app.get("status")), message or app.get("message") or "", deployments)
    return apps


def status(model_id: str) -> AppInfo:
    """The model application's status; NOT_STARTED when Serve does not know it."""
    return snapshot().get(app_name(model_id)) or AppInfo("NOT_STARTED", "")


def unplaceable(model_id: str) -> str | None:
    """Why Ray cannot place the model's replica, if it cannot (None: placed, or still trying).

    Ray marks a placement group INFEASIBLE within a fraction of a second when no node has the
    resources (Serve says so only after 30 s, "...taken more than 30s to be scheduled")."""
    from ray.util import placement_group_table

    prefix = f"SERVE_REPLICA::{app_name(model_id)}#"
    for group in placement_group_table().values():
        if not str(group.get("name", "")).startswith(prefix) or group.get("state") != "PENDING":
            continue
        if (group.get("stats") or {}).get("scheduling_state") == "INFEASIBLE":
            wanted = ", ".join(f"{k} {v:g}" for bundle in group.get("bundles", {}).values() for k, v in bundle.items())
            return f"Ray has no node with the resources its engine needs ({wanted})"
    return None


def engine_info(model_id: str) -> dict[str, Any]:
    """What the model's replica reports about its engine (app/engines/model_server.py)."""
    handle = serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=app_name(model_id))
    return handle.engine_info.remote().result(timeout_s=ENGINE_INFO_TIMEOUT_S)


def last_line(message: str) -> str:
    """The most specific part of a Serve error message (the engine's exception)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "the model's replica failed to start"


def cluster() -> dict:
    """Serve's own view: proxies and every application with its deployments' health.

    The box runs no Serve proxy (the router listens on :8000 itself), so ``proxies`` is empty
    unless someone started Serve with proxies.
    """
    status = serve.status()
    apps = {}
    for name, app in status.applications.items():
        apps[name] = {
            "status": _plain(app.status),
            "message": last_line(app.message) if app.message else "",
            "deployments": {d: {"status": _plain(dep.status), "replicas": dict(dep.replica_states or {}),
                                "message": dep.message or ""} for d, dep in app.deployments.items()},
        }
    return {"proxies": {node: _plain(s) for node, s in status.proxies.items()}, "applications": apps}


def _plain(value) -> str:
    return str(getattr(value, "value", value))
