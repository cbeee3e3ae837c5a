"""/api/models: the registry's models, each with what the serving plane says about it."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Response

from app.api import changes
from app.api.deps import BaseRevision, EventsDep, ServingDep, SettingsDep, StoreDep, WatchDep, Writer, etag
from app.api.errors import ApiError
from app.api.schemas import ModelCreate, ModelUpdate, WriteResult
from app.engines.sources import missing_packages
from app.registry.edits import ModelNotFound, add_model, model_entry, remove_model, update_model
from app.registry.schema import MODEL_ID_PATTERN, ModelEntry

router = APIRouter(prefix="/api/models", tags=["models"])


def checked_id(model_id: str) -> str:
    if not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        raise ApiError(400, "invalid_model_id", f"model id {model_id!r} is not allowed (letters, digits, '.', "
                       "'_', '-', ':'; no '/' or '..')")
    return model_id


def public(entry: ModelEntry, runtime: dict | None) -> dict[str, Any]:
    """A registry entry plus its live state (``state: unknown`` when the serving plane is down)."""
    # The manager's memory_gb is the measured one when there is a measurement (else the entry's).
    live = {"state": "unknown"} if runtime is None else {
        k: v for k, v in runtime.items() if k not in entry.model_fields or k == "memory_gb"}
    return {**entry.model_dump(mode="json"), **live}


def installed_source(model_id: str, source: str | None) -> None:
    """Refuse a ``package:`` source this install does not have (the box would refuse to start on it)."""
    if source is not None:
        try:
            entry = ModelEntry(id=model_id, source=source)
        except ValueError:  # pydantic's ValidationError is one: the write's own validation names the bad source
            return
        missing = missing_packages([entry])
        if missing:
            raise ApiError(400, "source_not_installed", f"{missing[0]}: package: sources name weights inside a "
                           "Python package of this install; use a Hugging Face repo id or an absolute path")


@router.get("")
async def list_models(store: StoreDep, serving: ServingDep, response: Response) -> dict:
    """Every model in the registry with its state, memory, last use and in-flight requests."""
    registry = store.read()
    status = await serving.status_or_none()
    live = {m["id"]: m for m in status["models"]} if status else {}
    response.headers.update(etag(registry.revision))
    return {"revision": registry.revision, "serving": status is not None,
            "models": [public(m, live.get(m.id) if status else None) for m in registry.models]}


@router.get("/{model_id}")
async def get_model(model_id: str, store: StoreDep, serving: ServingDep, response: Response) -> dict:
    """One model: its registry entry and its live state."""
    registry = store.read()
    entry = registry.get(checked_id(model_id))
    if entry is None:
        raise ModelNotFound(model_id)
    status = await serving.status_or_none()
    live = next((m for m in status["models"] if m["id"] == model_id), None) if status else None
    response.headers.update(etag(registry.revision))
    return public(entry, live if status else None)


@router.post("", status_code=201, response_model=WriteResult)
async def add(body: ModelCreate, base: BaseRevision, who: Writer, store: StoreDep, serving: ServingDep,
              watch: WatchDep, events: EventsDep, settings: SettingsDep, response: Response) -> dict:
    """Add a model (If-Match: the revision it is based on)."""
    installed_source(body.id, body.source)
    changes.allowed_here(settings, body)
    write = partial(store.edit, base, lambda doc: add_model(doc, body))
    result = await changes.commit(serving, watch, events, who, write, "add", body.id)
    response.headers.update(etag(result["revision"]))
    return {**result, "model": body.model_dump(mode="json")}


@router.patch("/{model_id}", response_model=WriteResult)
async def edit(model_id: str, body: ModelUpdate, base: BaseRevision, who: Writer, store: StoreDep,
               serving: ServingDep, watch: WatchDep, events: EventsDep, settings: SettingsDep,
               response: Response) -> dict:
    """Change fields of a model, e.g. toggle serve / always_on or set idle_timeout_s."""
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        raise ApiError(400, "empty_change", "send at least one field to change")
    model_id = checked_id(model_id)  # here, not in the edit: that runs under the registry's lock
    installed_source(model_id, fields.get("source"))

    def change(doc) -> None:
        update_model(doc, model_id, fields)
        merged = model_entry(doc, model_id)  # the model as the edit leaves it: nested engine settings merge
        if merged is not None:
            changes.allowed_here(settings, merged, fields)  # raised under the lock, before anything is written

    write = partial(store.edit, base, change)
    result = await changes.commit(serving, watch, events, who, write, "edit", model_id)
    response.headers.update(etag(result["revision"]))
    entry = store.read().get(model_id)
    return {**result, "model": entry.model_dump(mode="json") if entry else None}


@router.delete("/{model_id}", response_model=WriteResult)
async def delete(model_id: str, base: BaseRevision, who: Writer, store: StoreDep, serving: ServingDep,
                 watch: WatchDep, events: EventsDep, response: Response) -> dict:
    """Remove a model from the registry (and unload it). Downloaded weights stay on disk."""
    model_id = checked_id(model_id)
    write = partial(store.edit, base, lambda doc: remove_model(doc, model_id))
    result = await changes.commit(serving, watch, events, who, write, "delete", model_id)
    response.headers.update(etag(result["revision"]))
    return result
