"""Events: what happened (loads, unloads with their reason, downloads, registry edits), newest first."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

bp = Blueprint("events", __name__, url_prefix="/events")
SHOWN_APART = ("time", "kind", "model", "who")


def _query() -> dict:
    limit = request.args.get("limit", "200")
    return {"kind": request.args.get("kind", "").strip()[:64], "model": request.args.get("model", "").strip()[:64],
            "limit": int(limit) if limit.isdigit() and 0 < int(limit) <= 1000 else 200}


def _events(query: dict) -> list[dict]:
    return g.api.get("/api/events", **query)["events"]


@bp.get("")
def index():
    query = _query()
    return render_template("events/index.html", query=query, events=_events(query), apart=SHOWN_APART)


@bp.get("/live")
def live():
    return render_template("events/_live.html", events=_events(_query()), apart=SHOWN_APART)
