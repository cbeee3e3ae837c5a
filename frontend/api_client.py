"""The admin UI's only line to the box: the management API over HTTP.

Every failure becomes one exception, ``ApiError``, carrying the API's own status, code and
message (``{"error": {"message", "type", "code", ...}}``), or a message that says the API could
not be reached. Views show ``message`` to the person; nothing else leaves this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

READ_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 330.0  # an unload waits until the memory is free; the API gives up after 300 s


def seg(value: object) -> str:
    """One path segment, quoted (an id with '?' or '/' must not change the API path)."""
    return quote(str(value), safe="")


class ApiError(Exception):
    """A request to the management API failed; ``message`` is fit to show."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    @property
    def conflict(self) -> bool:
        """Someone else changed the registry since the revision this write was based on."""
        return self.code == "revision_conflict"

    @property
    def current_revision(self) -> int | None:
        return self.details.get("current_revision")


def new_pool(base_url: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """One connection pool per UI process (thread-safe); requests add the session's token.

    ``transport``: how requests reach the API (default: HTTP; tests answer them in process).
    """
    return httpx.Client(base_url=base_url, timeout=READ_TIMEOUT_S, follow_redirects=False, transport=transport)


class ApiClient:
    """Calls on behalf of one logged-in person (their token) through the shared pool."""

    def __init__(self, pool: httpx.Client, token: str | None = None) -> None:
        self.pool, self.token = pool, token

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                revision: int | None = None, timeout: float | None = None) -> dict:
        return self._send(method, path, params, json, revision, timeout)[0]

    def _send(self, method, path, params, json, revision, timeout) -> tuple[dict, int | None]:
        """(JSON body, the registry revision from the ETag if any) or ApiError."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if revision is not None:
            headers["If-Match"] = f'"{revision}"'
        if params:
            params = {k: v for k, v in params.items() if v not in (None, "")}
        try:
            response = self.pool.request(method, path, params=params, json=json, headers=headers,
                                         timeout=timeout or (READ_TIMEOUT_S if method == "GET" else WRITE_TIMEOUT_S))
        except httpx.TimeoutException:
            raise ApiError(504, "api_timeout", "The management API did not answer in time; the action may "
                           "still complete: reload in a moment.") from None
        except httpx.HTTPError as exc:
            raise ApiError(503, "api_unreachable", f"The management API at {self.pool.base_url} is not "
                           f"answering ({type(exc).__name__}). Is it running? Check with ./start.sh status.") from None
        if response.is_success:
            etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
            try:
                return response.json(), int(etag) if etag.isdigit() else None
            except ValueError:
                raise ApiError(502, "bad_api_response", "The management API sent an answer that is not JSON.") from None
        raise _error(response)

    def get(self, path: str, **params: Any) -> dict:
        return self.request("GET", path, params=params)

    def get_versioned(self, path: str) -> tuple[dict, int | None]:
        """A registry read and the revision it was read at (ETag): the base of an edit made from it."""
        return self._send("GET", path, None, None, None, None)

    def post(self, path: str, json: Any = None, revision: int | None = None) -> dict:
        return self.request("POST", path, json=json, revision=revision)

    def patch(self, path: str, json: Any, revision: int) -> dict:
        return self.request("PATCH", path, json=json, revision=revision)

    def delete(self, path: str, revision: int) -> dict:
        return self.request("DELETE", path, revision=revision)


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        details = {k: v for k, v in body.items() if k not in ("message", "type", "code", "param")}
        return ApiError(response.status_code, body.get("code") or "api_error", str(body["message"]), details)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiError(response.status_code, "api_error",
                        f"The management API answered HTTP {response.status_code} without an explanation.")
