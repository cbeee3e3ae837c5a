"""Serving control: load / unload now, reconcile ("redeploy"), status, and Ray Serve's health."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api import changes
from app.api.deps import EventsDep, ServingDep, Writer
from app.api.errors import ApiError
from app.api.routes.models import checked_id
from app.lifecycle.states import Outcome

router = APIRouter(prefix="/api", tags=["serving"])


async def _control(action: str, model_id: str, serving, events, who) -> dict:
    result = await serving.call(action, checked_id(model_id), timeout_s=300)
    outcome = result["outcome"]
    if outcome == Outcome.UNKNOWN:
        raise ApiError(404, "model_not_found", f"model {model_id!r} is not in the registry")
    if outcome == Outcome.NOT_SERVED:
        raise ApiError(409, "model_not_served", f"model {model_id!r} has serve: false; turn serve on first")
    if outcome == Outcome.DOWNLOADING:
        raise ApiError(409, "model_not_downloaded", result["model"].get("missing") or "not downloaded yet",
                       download=result["model"].get("download"))
    events.record(f"model_{action}_requested", who=who.name, model=model_id)
    return result["model"]


@router.post("/models/{model_id}/load")
async def load(model_id: str, who: Writer, serving: ServingDep, events: EventsDep) -> dict:
    """Start loading the model now; returns at once with its state (poll it, or watch /api/events)."""
    return await _control("load", model_id, serving, events, who)


@router.post("/models/{model_id}/unload")
async def unload(model_id: str, who: Writer, serving: ServingDep, events: EventsDep) -> dict:
    """Unload the model now (even an always-on one); returns when its memory is free."""
    return await _control("unload", model_id, serving, events, who)


@router.post("/reconcile")
async def reconcile(who: Writer, serving: ServingDep, events: EventsDep) -> dict:
    """Apply the registry to the serving plane; unchanged models are not restarted."""
    result = await changes.apply(serving)
    if not result["ok"]:
        raise ApiError(503, "serving_unavailable", result["reason"])
    events.record("reconciled", who=who.name, revision=result["revision"], actions=result["actions"])
    return result


@router.get("/status")
async def status(serving: ServingDep) -> dict:
    """Every model's state, memory, last use, requests in flight, last load time and error."""
    return await serving.call("status")


@router.get("/cluster")
async def cluster(serving: ServingDep) -> dict:
    """Ray Serve's proxies and applications with their health, and ``nodes``: each node of the box (head
    first) with its address, whether it is alive or leaving (or why it was lost), its devices with what is
    booked there and the room left, and its models."""
    serve, nodes = await asyncio.gather(serving.call("cluster"), serving.call("nodes"))
    return {**serve, "nodes": nodes}
