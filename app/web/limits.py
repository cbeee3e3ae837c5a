"""Bounded requests: body size, JSON-only POSTs and a cap on requests in flight (pure ASGI middleware,
cheap per request: no response re-wrapping, which Starlette's BaseHTTPMiddleware would add)."""

from __future__ import annotations

from collections.abc import Callable

from app.web.reply import send_error


class BodyLimit:
    """Refuses a body over ``max_bytes`` before it is read: at once on its Content-Length, and for a
    body without one (chunked) as soon as the bytes received pass the limit, so no handler ever
    holds more than ``max_bytes``."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        await send_error(send, 413, f"request body over {self.max_bytes} bytes", "invalid_request_error",
                         "body_too_large")


class JsonOnly:
    """A POST must say ``Content-Type: application/json``, else 415.

    A web page can send a cross-site POST without asking first (no CORS preflight) only as a
    form or with ``text/plain``; refusing those keeps every page the box's user opens from
    driving :8000 (loading, unloading, burning compute)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                shown = kind.decode("latin-1") or "none"
                return await send_error(send, 415, f"send the request body as JSON with 'Content-Type: "
                                        f"application/json' (got {shown})", "invalid_request_error",
                                        "unsupported_media_type")
        await self.app(scope, receive, send)


class InFlightLimit:
    """At most ``limit`` requests in flight (a stream counts until it ends); the next gets 503 with
    Retry-After, at once, rather than queueing without bound. ``open_paths`` (liveness) always pass."""

    def __init__(self, app, limit: int | Callable[[dict], int], open_paths: frozenset[str] = frozenset(),
                 retry_after_s: int = 1) -> None:
        self.app, self.open_paths = app, open_paths
        self.limit = limit if callable(limit) else (lambda scope: limit)  # a callable: read per request
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        limit = self.limit(scope)
        if self.in_flight >= limit:
            return await send_error(send, 503, f"the box is answering {limit} requests already: try again "
                                    "shortly", "server_error", "too_many_requests",
                                    headers=[(b"retry-after", self.retry_after)])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
