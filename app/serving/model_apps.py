"""Ray Serve operations on per-model applications: deploy, delete, status, replica PIDs.

Blocking Serve client calls; the model manager runs them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import serve

from app.engines.llm_config import DEPLOYMENT_NAME, EngineHost, app_name, build_app
from app.registry.schema import ModelEntry


@dataclass(frozen=True)
class AppStatus:
    status: str  # Serve's application status: NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED, ...
    message: str  # the deployment's message; its last line names the engine's error


def deploy(entry: ModelEntry, host: EngineHost) -> None:
    """Submit the model's application and return at once (the manager polls its status)."""
    target = serve.RunTarget(build_app(entry, host), name=app_name(entry.id), route_prefix=None)
    serve.run_many([target], wait_for_applications_running=False)


def delete(model_id: str) -> None:
    """Delete the model's application; returns when its replicas (and engines) are gone."""
    serve.delete(app_name(model_id), _blocking=True)


def status(model_id: str) -> AppStatus:
    """The application's status; NOT_STARTED when Serve does not know it."""
    app = serve.status().applications.get(app_name(model_id))
    if app is None:
        return AppStatus("NOT_STARTED", "")
    deployment = app.deployments.get(DEPLOYMENT_NAME)
    message = (deployment.message if deployment else "") or app.message or ""
    return AppStatus(str(app.status.value if hasattr(app.status, "value") else app.status), message)


def app_names() -> set[str]:
    """Every Serve application that exists now."""
    return set(serve.status().applications)


def replica_pids(model_id: str) -> list[int]:
    """PIDs of the model's running replicas (their engine processes are their children)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = details.get("applications", {}).get(app_name(model_id)) or {}
    deployment = app.get("deployments", {}).get(DEPLOYMENT_NAME) or {}
    return [r["pid"] for r in deployment.get("replicas", []) if r.get("pid") and r.get("state") == "RUNNING"]


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

    def plain(value) -> str:
        return str(getattr(value, "value", value))

    apps = {}
    for name, app in status.applications.items():
        apps[name] = {
            "status": plain(app.status),
            "message": last_line(app.message) if app.message else "",
            "deployments": {d: {"status": plain(dep.status), "replicas": dict(dep.replica_states or {}),
                                "message": dep.message or ""} for d, dep in app.deployments.items()},
        }
    return {"proxies": {node: plain(s) for node, s in status.proxies.items()}, "applications": apps}
