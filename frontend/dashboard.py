"""Dashboard: every model's state, memory, last use and requests in flight; GPU memory (or the
CPU budget); Ray Serve's health; the box's nodes with what is booked on each of their devices.
The live part refreshes itself (static/app.js); load / unload now and redeploy are here too, as
every page with a model on it posts to them."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request

from frontend.api_client import ApiError, seg
from frontend.auth import safe_next

bp = Blueprint("dashboard", __name__)
NODE_BADGES = {"alive": "ok", "leaving": "warn", "lost": "bad"}


def _node(node: dict) -> dict:
    """The node with its ``state``: lost (Ray marked it dead), leaving (``./start.sh leave`` on it) or
    alive, and that state's ``badge`` class."""
    state = "lost" if not node["alive"] else "leaving" if node["leaving"] else "alive"
    return {**node, "state": state, "badge": NODE_BADGES[state]}


def _try(path: str) -> tuple[dict | None, str | None]:
    """(answer, None) or (None, the API's message): one failing panel must not hide the others."""
    try:
        return g.api.get(path), None
    except ApiError as exc:
        if exc.status == 401:
            raise
        return None, exc.message


def overview() -> dict:
    models, models_error = _try("/api/models")
    gpu, gpu_error = _try("/api/gpu")
    cluster, cluster_error = _try("/api/cluster")
    healthy = None
    if cluster:
        healthy = (all(s == "HEALTHY" for s in cluster.get("proxies", {}).values())
                   and all(a["status"] == "RUNNING" for a in cluster.get("applications", {}).values()))
    nodes = [_node(n) for n in (cluster or {}).get("nodes", [])]
    return {"models": models, "models_error": models_error, "gpu": gpu, "gpu_error": gpu_error,
            "cluster": cluster, "cluster_error": cluster_error, "healthy": healthy, "nodes": nodes}


@bp.get("/")
def index():
    return render_template("dashboard/index.html", **overview())


@bp.get("/dashboard/live")
def live():
    """The refreshing part of the dashboard (an HTML fragment for static/app.js)."""
    return render_template("dashboard/_live.html", **overview())


def _serving(action: str, model_id: str, done: str):
    try:
        model = g.api.post(f"/api/models/{seg(model_id)}/{action}")
    except ApiError as exc:
        flash(f"Could not {action} {model_id}: {exc.message}", "error")
    else:
        flash(f"{model_id}: {done} (now {model.get('state', 'unknown')}).", "info")
    return redirect(safe_next(request.form.get("next")))


@bp.post("/models/<model_id>/load")
def load(model_id: str):
    """Load now; the page's live refresh shows loading -> ready."""
    return _serving("load", model_id, "load started")


@bp.post("/models/<model_id>/unload")
def unload(model_id: str):
    return _serving("unload", model_id, "unloaded")


@bp.post("/reconcile")
def reconcile():
    """Redeploy: apply the registry to the serving plane (unchanged models are not touched)."""
    try:
        result = g.api.post("/api/reconcile")
    except ApiError as exc:
        flash(f"Could not redeploy: {exc.message}", "error")
    else:
        actions = ", ".join(f"{m}: {a}" for m, a in sorted(result.get("actions", {}).items())) or "nothing to do"
        flash(f"Applied registry revision {result.get('revision')} ({actions}).", "info")
    return redirect(safe_next(request.form.get("next")))
