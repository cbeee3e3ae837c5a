"""/api/events: what happened (loads, unloads with reason, downloads, registry edits), newest first."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import EventsDep

router = APIRouter(prefix="/api", tags=["events"])


@router.get("/events")
def events(log: EventsDep, limit: int = Query(100, ge=1, le=1000),
           kind: str | None = Query(None, max_length=64, description="Only kinds starting with this, e.g. model_"),
           model: str | None = Query(None, max_length=64)) -> dict:
    """The newest events first."""
    return {"events": log.read(limit, kind, model)}
