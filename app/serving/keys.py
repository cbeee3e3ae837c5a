"""Who may do what on :8000: scoped bearer keys, checked by one ASGI middleware.

Scopes: ``inference`` (the OpenAI routes) and ``control`` (``/models/load``, ``/models/unload``:
loading, unloading, and so evicting, for everyone). A key may be limited to some models. Keys live
hashed in ``<state_dir>/api-keys`` (``./start.sh key NAME --scope ...``, app/credentials.py), read
again whenever that file changes, so a new or revoked key counts at once; keys from
``LLMBOX_API_KEYS`` (hashed by the driver, never given to the router in clear) have the inference
scope.

Without any inference key, inference is open on loopback (the quickstart); model control always
needs a control key, because a web page can reach loopback too (app/web/limits.py JsonOnly keeps
pages from sending JSON; a key keeps out everyone else).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from app.credentials import Credential, CredentialFile, cli
from app.serving.answers import error

SCOPES = ("inference", "control")
OPEN_PATHS = frozenset({"/health"})  # liveness stays open
CONTROL_PATHS = frozenset({"/models/load", "/models/unload"})
ANY_SCOPE_PATHS = ("/v1/models", "/metrics")  # reading what is served: either scope may
ENV_KEY = Credential("LLMBOX_API_KEYS", frozenset({"inference"}))


def hash_key(key: str) -> str:
    """Keys from LLMBOX_API_KEYS never leave the driver: the router is given their SHA-256 only."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyFile(CredentialFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCOPES, "sk-llmbox-", "llmbox :8000 API keys")


def inference_keys(path: Path) -> int:
    return sum("inference" in key.scopes for key in KeyFile(path).entries())


def needed_scope(path: str) -> str | None:
    """The scope a path needs (None: open; "any": either)."""
    if path in OPEN_PATHS:
        return None
    if path in CONTROL_PATHS:
        return "control"
    if path.startswith(ANY_SCOPE_PATHS):
        return "any"
    return "inference"


class RequireKey:
    """Plain ASGI rather than ``@app.middleware``: Starlette's BaseHTTPMiddleware re-wraps every
    response body, which costs measurable time per streamed chunk.

    Reads ``app.state``: ``api_key_hashes`` (from LLMBOX_API_KEYS), ``key_file`` (a KeyFile or
    None) and ``keys_required`` (beyond loopback: inference needs a key even when none exists).
    Puts the caller's Credential (or None) in ``scope["state"]["key"]`` for the routes."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        state = scope["app"].state  # the app serving this request (Starlette sets it)
        need = needed_scope(scope["path"].removeprefix(scope.get("root_path", "")))
        key = None
        # Open inference (loopback, no inference key exists) ignores whatever key a client sends:
        # OpenAI clients must send one, and "any text" is what users are told to put there.
        if need == "control" or (need is not None and self._keys_needed(state)):
            headers = dict(scope["headers"])
            scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            secret = secret.strip() if scheme.lower() == "bearer" else ""
            # Anthropic's clients send their key as x-api-key (/v1/messages)
            secret = secret or headers.get(b"x-api-key", b"").decode("latin-1").strip()
            key = self._verify(state, secret) if secret else None
            if key is None and need == "control":
                return await self._refuse(scope, receive, send, 401, "loading and unloading models needs a key "
                                          "with the control scope (./start.sh key NAME --scope control): "
                                          "send Authorization: Bearer <key>", "control_key_required")
            if key is None:
                return await self._refuse(scope, receive, send, 401, "missing or invalid API key: send "
                                          "Authorization: Bearer <key>", "invalid_api_key")
            if need != "any" and need not in key.scopes:
                return await self._refuse(scope, receive, send, 403, f"key {key.name!r} lacks the {need!r} "
                                          "scope", "insufficient_scope")
        scope.setdefault("state", {})["key"] = key
        await self.app(scope, receive, send)

    @staticmethod
    def _verify(state, secret: str) -> Credential | None:
        found = state.key_file.verify(secret) if state.key_file is not None else None
        presented = hash_key(secret)
        for stored in state.api_key_hashes:  # check all, so timing says nothing
            if hmac.compare_digest(presented, stored):
                found = found or ENV_KEY
        return found

    @staticmethod
    def _keys_needed(state) -> bool:
        if state.keys_required or state.api_key_hashes:
            return True
        return state.key_file is not None and any("inference" in k.scopes for k in state.key_file.entries())

    @staticmethod
    async def _refuse(scope, receive, send, status: int, message: str, code: str) -> None:
        if scope["type"] == "websocket":  # no websocket routes yet: refuse before the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        kind = "authentication_error" if status == 401 else "permission_error"
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await error(status, message, kind, code, headers=headers)(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.serving.keys add NAME [--scope inference,control] [--models a,b] | list | remove NAME``."""
    from app.settings import get_settings

    return cli(argv, "python -m app.serving.keys", ":8000 API keys", KeyFile(get_settings().api_keys_path),
               "inference, control or inference,control", "inference", with_models=True)


if __name__ == "__main__":
    raise SystemExit(main())
