"""History: the registry's past revisions (with who changed what), a diff of each, and restore."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from frontend.api_client import ApiError
from frontend.models import flash_write_error, saved_message

bp = Blueprint("history", __name__, url_prefix="/history")


def _edits() -> dict[int, dict]:
    """revision -> the registry_edited event that made it (who, action, model), where still logged."""
    try:
        events = g.api.get("/api/events", kind="registry_edited", limit=1000)["events"]
    except ApiError as exc:
        if exc.status == 401:
            raise
        return {}
    return {e["revision"]: e for e in reversed(events) if isinstance(e.get("revision"), int)}


@bp.get("")
def index():
    return render_template("history/index.html", history=g.api.get("/api/registry/history"), edits=_edits())


@bp.get("/<int:revision>")
def show(revision: int):
    """One revision: its diff against the one before (what that change did) or against now."""
    against = request.args.get("against", "previous")
    if against not in ("previous", "current") and not against.isdigit():
        against = "previous"
    history = g.api.get("/api/registry/history")
    try:
        diff = g.api.get(f"/api/registry/history/{revision}/diff", against=against)
    except ApiError as exc:
        if exc.status != 404 or against != "previous":
            raise
        diff = {"from": None, "to": revision, "diff": ""}  # the first kept revision has no previous
    text = g.api.get(f"/api/registry/history/{revision}")["yaml"]
    return render_template("history/show.html", revision=revision, against=against, diff=diff, yaml=text,
                           current=history["current"], edit=_edits().get(revision))


@bp.post("/<int:revision>/restore")
def restore(revision: int):
    """Make this revision current again (as a new revision), based on the revision the page showed."""
    try:
        result = g.api.post(f"/api/registry/history/{revision}/restore",
                            revision=int(request.form.get("base_revision", "0")))
    except ApiError as exc:
        flash_write_error(exc, "Not restored")
        return redirect(url_for("history.show", revision=revision))
    flash(saved_message(result, f"Restored revision {revision}"), "info")
    return redirect(url_for("history.index"))
