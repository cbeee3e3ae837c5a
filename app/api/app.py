"""The management API's app factory: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import importlib
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.api import errors
from app.api.deps import authorize
from app.api.errors import ApiError
from app.api.registry_watch import RegistryWatch
from app.api.routes import downloads, events, gpu, hub, models, registry, serving
from app.api.serving_client import ServingClient
from app.events import EventLog
from app.hub.downloads import DownloadManager
from app.registry.store import RegistryStore
from app.settings import Settings
from app.web.hosts import AllowedHosts, allowed_names
from app.web.limits import BodyLimit

MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings) -> FastAPI:
    """Build the API for these settings (tests build their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.downloads.resume_unfinished()  # downloads cut short by a restart continue
        # Importing Ray takes seconds: do it now, not in the first request that needs the manager.
        warm = asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "ray")
        # Its first check starts what the registry needs now; later ones, what any writer adds.
        background = {asyncio.create_task(state.registry_watch.run(), name="registry-watch")}
        yield
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await warm
        state.downloads.shutdown()

    # The docs routes are FastAPI's own, which skip the app's dependencies: they are added below as
    # ordinary routes, so they need a token beyond loopback like every other read.
    app = FastAPI(title="llmbox management API", version="1", lifespan=lifespan, dependencies=[Depends(authorize)],
                  description="Registry, serving control, GPU status, Hugging Face browse and downloads, events.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.store = RegistryStore(settings.registry_path, settings.registry_history_keep)
    app.state.serving = ServingClient(settings)
    app.state.events = EventLog(settings.state_dir / "events.jsonl")
    app.state.downloads = DownloadManager(
        settings.models_dir, settings.state_dir, endpoint=settings.hf_endpoint,
        token=settings.hf_token.get_secret_value() if settings.hf_token else None,
        on_event=lambda kind, data: app.state.events.record(kind, **data),
        min_free_bytes=int(settings.download_min_free_gb * 1024**3),
    )
    app.state.registry_watch = RegistryWatch(app.state.store, app.state.downloads, app.state.events)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(AllowedHosts, names=allowed_names(settings.host, settings.allowed_hosts))  # outermost
    for module in (models, registry, serving, gpu, hub, downloads, events):
        app.include_router(module.router)

    @app.get("/api/health", tags=["auth"])
    def health() -> dict:
        """Liveness (no auth)."""
        return {"status": "ok"}

    @app.get("/api/whoami", tags=["auth"])
    def whoami(request: Request) -> dict:
        """The token's name and scope (the admin UI's login check); 401 without a valid token."""
        principal = request.state.principal
        if principal is None:
            raise ApiError(401, "missing_token", "send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
        return {"name": principal.name, "scope": principal.scope}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    return app
