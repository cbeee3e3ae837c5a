"""FastAPI dependencies: settings, registry store, serving client, downloads, events, auth.

Everything a handler needs comes through here (``Annotated`` aliases), so tests override one
piece (``app.dependency_overrides``) without touching the rest.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.api.errors import ApiError
from app.api.registry_watch import RegistryWatch
from app.api.serving_client import ServingClient
from app.api.tokens import Principal, TokenFile
from app.events import EventLog
from app.hub.downloads import DownloadManager
from app.registry.store import RegistryStore
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> RegistryStore:
    return request.app.state.store


def get_serving(request: Request) -> ServingClient:
    return request.app.state.serving


def get_downloads(request: Request) -> DownloadManager:
    return request.app.state.downloads


def get_events(request: Request) -> EventLog:
    return request.app.state.events


def get_registry_watch(request: Request) -> RegistryWatch:
    return request.app.state.registry_watch


def get_nvml():
    """The NVML module (app.gpu.nvml.module); tests override this with a fake behind the same interface."""
    from app.gpu import nvml

    return nvml.module()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RegistryStore, Depends(get_store)]
ServingDep = Annotated[ServingClient, Depends(get_serving)]
DownloadsDep = Annotated[DownloadManager, Depends(get_downloads)]
EventsDep = Annotated[EventLog, Depends(get_events)]
WatchDep = Annotated[RegistryWatch, Depends(get_registry_watch)]
NvmlDep = Annotated[object, Depends(get_nvml)]


def _principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_authorization", "use the header 'Authorization: Bearer <token>'",
                       {"WWW-Authenticate": "Bearer"})
    principal = TokenFile(request.app.state.settings.admin_tokens_path).verify(token.strip())
    if principal is None:
        raise ApiError(401, "invalid_token", "this token is not valid (revoked or mistyped)",
                       {"WWW-Authenticate": "Bearer"})
    return principal


OPEN_PATHS = {"/api/health"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Reads that need a token even on loopback: hub calls run with the box's Hugging Face token (and
# list its private repos), so no page the user opens may trigger them with an <img> tag.
TOKEN_PATHS = ("/api/hub/",)


def needs_token(request: Request) -> bool:
    """Whether a read needs a token: beyond loopback always, on loopback for TOKEN_PATHS."""
    return request.app.state.settings.binds_beyond_loopback or request.url.path.startswith(TOKEN_PATHS)


def authorize(request: Request) -> None:
    """Runs before every route: reads are open on loopback but for the hub's (a token is needed
    beyond it); every write needs a token with the admin scope wherever the API listens. Sets
    ``request.state.principal``."""
    principal = _principal(request)
    request.state.principal = principal
    if request.url.path in OPEN_PATHS:
        return
    if request.method in READ_METHODS:
        if principal is None and needs_token(request):
            raise ApiError(401, "missing_token", "this API needs 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})
        return
    if principal is None:
        raise ApiError(401, "missing_token", "changes need 'Authorization: Bearer <token>' "
                       "(create one with: ./start.sh token NAME)", {"WWW-Authenticate": "Bearer"})
    if not principal.can_write:
        raise ApiError(403, "read_only_token", f"token {principal.name!r} may read but not change anything")


def _writer(request: Request) -> Principal:
    return request.state.principal  # authorize() has already refused writes without an admin token


Writer = Annotated[Principal, Depends(_writer)]


def if_match(if_match: Annotated[str | None, Header()] = None) -> int:
    """The registry revision a write is based on, from ``If-Match`` (428 without it)."""
    if if_match is None:
        raise ApiError(428, "if_match_required", "send 'If-Match' with the registry revision (the ETag "
                       "of GET /api/registry or /api/models) this change is based on")
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ApiError(400, "invalid_if_match", f"If-Match {if_match!r} is not a registry revision ETag like \"12\"")
    return int(value)


BaseRevision = Annotated[int, Depends(if_match)]


def etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}
