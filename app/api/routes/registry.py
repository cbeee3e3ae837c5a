"""/api/registry: the whole registry file, its history, diffs and restore."""

from __future__ import annotations

import difflib
from functools import partial

from fastapi import APIRouter, Query, Response

from app.api import changes
from app.api.deps import BaseRevision, EventsDep, ServingDep, StoreDep, WatchDep, Writer, etag
from app.api.errors import ApiError
from app.api.schemas import WriteResult

router = APIRouter(prefix="/api/registry", tags=["registry"])


@router.get("")
def registry(store: StoreDep, response: Response) -> dict:
    """The current registry: parsed, and the YAML text as on disk (comments included)."""
    text = store.path.read_text()
    current = store.read()
    response.headers.update(etag(current.revision))
    return {"revision": current.revision, "registry": current.model_dump(mode="json"), "yaml": text}


@router.get("/history")
def history(store: StoreDep) -> dict:
    """Kept revisions, newest first, with when each was written."""
    revisions = store.history()
    rows = [{"revision": r, "written": store.history_path(r).stat().st_mtime}
            for r in reversed(revisions)]
    return {"current": store.read().revision, "revisions": rows}


@router.get("/history/{revision}")
def revision(revision: int, store: StoreDep) -> dict:
    """One past revision's YAML text."""
    return {"revision": revision, "yaml": store.revision_text(revision)}


@router.get("/history/{revision}/diff")
def diff(revision: int, store: StoreDep,
         against: str = Query("current", description="'current', 'previous' or a revision number")) -> dict:
    """A unified diff from ``revision`` to ``against`` ('previous' diffs the change that made it)."""
    old = revision
    if against == "current":
        new, new_text = store.read().revision, store.path.read_text()
    elif against == "previous":
        old, new = revision - 1, revision
        new_text = store.revision_text(new)
    elif against.isdigit():
        new = int(against)
        new_text = store.revision_text(new)
    else:
        raise ApiError(400, "invalid_against", f"against={against!r}: use 'current', 'previous' or a number")
    return _diff(old, store.revision_text(old), new, new_text)


def _diff(old: int, old_text: str, new: int, new_text: str) -> dict:
    lines = difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                 fromfile=f"revision {old}", tofile=f"revision {new}")
    return {"from": old, "to": new, "diff": "".join(lines)}


@router.post("/history/{revision}/restore", response_model=WriteResult)
async def restore(revision: int, base: BaseRevision, who: Writer, store: StoreDep, serving: ServingDep,
                  watch: WatchDep, events: EventsDep, response: Response) -> dict:
    """Make a past revision current again (as a new revision) and apply it."""
    write = partial(store.restore, base, revision)  # 404 when it is not kept, before anything is written
    result = await changes.commit(serving, watch, events, who, write, f"restore {revision}")
    response.headers.update(etag(result["revision"]))
    return result
