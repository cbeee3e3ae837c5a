"""Secrets shared by this box's own processes, kept in 0600 files, and the check a model replica's
port makes with one (only the router may talk to it: the router sends the secret in a header).

One owner of the file format (a line of hex) for every box secret (the Ray token), and of the
replica secret, which is derived from the Ray token: every node of the cluster has that token (a
worker gets it when it joins), so a replica on any node can check the router's header with nothing
more copied, and whoever holds the token controls the cluster anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from app.web.reply import send_error

HEADER = "x-llmbox-replica-secret"
_HEADER = HEADER.encode()
TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"  # every process of the box's Ray cluster has it (app/ray_head.py)
_PURPOSE = b"llmbox router to model replica"


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


def write(path: Path, value: str) -> None:
    """Put a secret given from elsewhere (the cluster's token on a worker) into ``path`` (0600, atomic)."""
    value = value.strip()
    if len(value) < 32 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError("that is not a cluster token (64 hex digits): copy it from ./start.sh token-for-worker")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.replace(temp, path)


def read(path: Path | str) -> str:
    value = Path(path).read_text().strip()
    if len(value) < 32:
        raise ValueError(f"{path} does not hold a secret (too short): delete it and start the box again")
    return value


def replica_secret(token_path: Path | str | None = None) -> str:
    """The secret the router sends and model replicas require, from this node's Ray token file
    (``token_path``, else the one Ray itself uses here)."""
    path = token_path or os.environ.get(TOKEN_PATH_VARIABLE)
    if not path:
        raise RuntimeError(f"{TOKEN_PATH_VARIABLE} is not set: this process is not part of the box's Ray cluster")
    return hmac.new(read(path).encode(), _PURPOSE, hashlib.sha256).hexdigest()


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
