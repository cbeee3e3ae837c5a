"""Secrets shared by this box's own processes, kept in 0600 files, and the check a model replica's
port makes with one (only the router may talk to it: the router sends the secret in a header).

One owner of the file format (a line of hex) for every box secret: the Ray token and the replica
secret.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from app.web.reply import send_error

HEADER = "x-llmbox-replica-secret"
_HEADER = HEADER.encode()


def ensure(path: Path) -> str:
    """The secret in ``path``, made (0600, never overwritten) if there is none."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return read(path)


def read(path: Path | str) -> str:
    value = Path(path).read_text().strip()
    if len(value) < 32:
        raise ValueError(f"{path} does not hold a secret (too short): delete it and start the box again")
    return value


class RequireSecret:
    """ASGI middleware: only requests carrying the shared secret reach ``app`` (else 403).

    The replica listens on loopback (or the cluster's interface), which other local programs and,
    through DNS rebinding, web pages can reach too; the secret makes the router its only client."""

    def __init__(self, app, secret: str) -> None:
        self.app = app
        self._secret = secret.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            given = next((value for name, value in scope["headers"] if name == _HEADER), b"")
            if not hmac.compare_digest(given, self._secret):
                await send_error(send, 403, "this port serves llmbox's router only: send requests to :8000",
                                 "permission_error", "not_the_router")
                return
        await self.app(scope, receive, send)
