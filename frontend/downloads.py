"""Downloads: live progress (bar, rate, ETA), cancel, resume, and adding a finished download to the
registry in one click."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from frontend.api_client import ApiError, seg
from frontend.models import flash_write_error, saved_message

bp = Blueprint("downloads", __name__, url_prefix="/downloads")


def _state() -> dict:
    downloads = g.api.get("/api/downloads")["downloads"]
    downloads.sort(key=lambda d: d.get("created_at") or "", reverse=True)
    registry = g.api.get("/api/models")
    by_source = {(m["source"], m.get("revision") or "main"): m["id"] for m in registry["models"]}
    return {"downloads": downloads, "revision": registry["revision"], "registered": by_source}


@bp.get("")
def index():
    return render_template("downloads/index.html", **_state())


@bp.get("/live")
def live():
    """The refreshing list (an HTML fragment for static/app.js)."""
    return render_template("downloads/_live.html", **_state())


def _act(download_id: str, action: str, done: str):
    try:
        g.api.post(f"/api/downloads/{seg(download_id)}/{action}")
    except ApiError as exc:
        if exc.status == 401:
            raise
        flash(f"Could not {action} {download_id}: {exc.message}", "error")
    else:
        flash(f"{download_id}: {done}.", "info")
    return redirect(url_for("downloads.index"))


@bp.post("/<download_id>/cancel")
def cancel(download_id: str):
    return _act(download_id, "cancel", "cancelled, partial files removed")


@bp.post("/<download_id>/resume")
def resume(download_id: str):
    return _act(download_id, "resume", "resumed")


@bp.post("/<download_id>/register")
def register(download_id: str):
    """Add the finished download to the registry (served at once unless 'serve' is unticked)."""
    body = {"serve": bool(request.form.get("serve"))}
    try:
        result = g.api.post(f"/api/downloads/{seg(download_id)}/register", json=body,
                            revision=int(request.form.get("base_revision", "0")))
    except ApiError as exc:
        flash_write_error(exc, f"Could not add {download_id}")
        return redirect(url_for("downloads.index"))
    model = (result.get("model") or {}).get("id", download_id)
    flash(saved_message(result, f"Added {model} to the registry{'' if body['serve'] else ' (not served yet)'}"), "info")
    return redirect(url_for("models.index"))
