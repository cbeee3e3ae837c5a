"""/api/downloads: start, list, progress, cancel, resume, and add a finished one to the registry."""

from __future__ import annotations

import re
from functools import partial

from fastapi import APIRouter, Response
from pydantic import ValidationError

from app.api import changes
from app.api.deps import (BaseRevision, DownloadsDep, EventsDep, ServingDep, SettingsDep, StoreDep, WatchDep, Writer,
                          etag)
from app.api.errors import ApiError
from app.api.schemas import RegisterDownload, StartDownload, WriteResult
from app.api.routes.hub import hub_error
from app.hub.errors import HubError
from app.registry.edits import add_model
from app.registry.store import describe
from app.registry.schema import ModelEntry

router = APIRouter(prefix="/api/downloads", tags=["downloads"])
EMBED_TASKS = {"feature-extraction", "sentence-similarity"}


def _get(downloads, download_id: str) -> dict:
    try:
        return downloads.get(download_id)
    except KeyError:
        raise ApiError(404, "download_not_found", f"no download {download_id!r}") from None


@router.get("")
def list_downloads(downloads: DownloadsDep) -> dict:
    """Every download with its progress (bytes done/total, per file, rate, ETA)."""
    return {"downloads": downloads.list()}


@router.post("", status_code=202)
def start(body: StartDownload, who: Writer, downloads: DownloadsDep) -> dict:
    """Start downloading a repo (checks free disk space first); resumes a partial one."""
    try:
        return downloads.start(body.repo_id, body.revision)
    except HubError as exc:
        raise hub_error(exc) from None


@router.get("/{download_id}")
def show(download_id: str, downloads: DownloadsDep) -> dict:
    return _get(downloads, download_id)


@router.post("/{download_id}/cancel")
def cancel(download_id: str, who: Writer, downloads: DownloadsDep) -> dict:
    """Stop a download and remove its partial files."""
    _get(downloads, download_id)
    return downloads.cancel(download_id)


@router.post("/{download_id}/resume", status_code=202)
def resume(download_id: str, who: Writer, downloads: DownloadsDep) -> dict:
    """Continue a failed or interrupted download from the bytes already on disk."""
    _get(downloads, download_id)
    try:
        return downloads.resume(download_id)
    except HubError as exc:
        raise hub_error(exc) from None


@router.post("/{download_id}/register", status_code=201, response_model=WriteResult)
async def register(download_id: str, body: RegisterDownload, base: BaseRevision, who: Writer, store: StoreDep,
                   serving: ServingDep, downloads: DownloadsDep, watch: WatchDep, events: EventsDep,
                   settings: SettingsDep, response: Response) -> dict:
    """Add a finished download to the registry in one call (served at once unless serve: false)."""
    record = _get(downloads, download_id)
    if record["state"] != "completed":
        raise ApiError(409, "download_not_finished", f"download {download_id!r} is {record['state']}: "
                       "only a finished download can be added")
    repo, revision = record["repo_id"], record["revision"]
    task = body.task or ("embed" if record.get("pipeline_tag") in EMBED_TASKS else "generate")
    model_id = body.id or re.sub(r"[^A-Za-z0-9._:-]", "-", repo.split("/")[-1])[:64]
    try:
        entry = ModelEntry(id=model_id, source=repo, revision=None if revision == "main" else revision,
                           task=task, serve=body.serve, idle_timeout_s=body.idle_timeout_s,
                           **({"engine": body.engine} if body.engine else {}))
    except ValidationError as exc:
        raise ApiError(400, "invalid_model", describe(exc)) from None
    changes.allowed_here(settings, entry)  # e.g. engine.extra_args.trust_remote_code without the host setting
    write = partial(store.edit, base, lambda doc: add_model(doc, entry))
    result = await changes.commit(serving, watch, events, who, write, "add from download", model_id)
    response.headers.update(etag(result["revision"]))
    return {**result, "model": entry.model_dump(mode="json")}
