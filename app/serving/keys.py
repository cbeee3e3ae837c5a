"""Bearer-key check on :8000: one ASGI middleware for every route but the open ones."""

from __future__ import annotations

import hashlib
import hmac

from app.serving.answers import error

OPEN_PATHS = {"/health"}  # liveness stays open; everything else needs a key when keys are set


def hash_key(key: str) -> str:
    """Keys never leave the driver: the router is given their SHA-256 only."""
    return hashlib.sha256(key.encode()).hexdigest()


class RequireKey:
    """Plain ASGI rather than ``@app.middleware``: Starlette's BaseHTTPMiddleware re-wraps every
    response body, which costs measurable time per streamed chunk."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        hashes = scope["app"].state.api_key_hashes  # the app serving this request (Starlette sets it)
        if scope["type"] == "http" and hashes and \
                scope["path"].removeprefix(scope.get("root_path", "")) not in OPEN_PATHS:
            headers = dict(scope["headers"])
            scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            presented = hash_key(key.strip()) if scheme.lower() == "bearer" and key.strip() else ""
            if not any(hmac.compare_digest(presented, h) for h in hashes):
                response = error(401, "missing or invalid API key: send Authorization: Bearer <key>",
                                 "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
