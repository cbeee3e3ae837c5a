"""The Host allow-list of :8000, :8001 and :8080: the box answers only names it knows, so a web page
cannot reach it through DNS rebinding (a name the attacker controls, resolved to 127.0.0.1).

Always allowed: IP literals (a browser sends one only when the user typed the address: a rebinding
page cannot choose the Host header, it carries the attacker's own name), ``localhost`` and
``*.localhost`` (browsers resolve those to loopback themselves), the configured bind name and this
machine's host name. Anything else must be listed in ``LLMBOX_ALLOWED_HOSTS``; ``*`` there turns the
check off (behind a proxy that checks the name itself).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from app.openai_errors import body as error_body
from app.web.reply import send_json


def host_name(header: str) -> str:
    """The name or address of a Host header value, without port, brackets or trailing dot, lower-cased."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6]:port
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.rsplit(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(bind_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names (beyond IP literals and localhost) a box bound to ``bind_host`` answers."""
    names = {host_name(name) for name in extra if name.strip()}
    names.add(host_name(bind_host))
    names.add(socket.gethostname().lower())
    return frozenset(names)


def is_allowed(header: str, names: frozenset[str]) -> bool:
    name = host_name(header)
    if not name:
        return False
    return "*" in names or _is_ip(name) or name == "localhost" or name.endswith(".localhost") or name in names


def refusal(header: str | None) -> tuple[int, dict]:
    """Status and OpenAI-shaped body for a request whose Host is missing or not allowed."""
    if not header:
        return 400, error_body("the request has no Host header", "invalid_request_error", "host_required")
    return 421, error_body(
        f"this box does not answer to the name {host_name(header)!r}: use its address, or add the name to "
        "LLMBOX_ALLOWED_HOSTS", "invalid_request_error", "host_not_allowed")


class AllowedHosts:
    """Pure ASGI middleware: answers 400/421 (OpenAI error shape) unless the Host header is allowed."""

    def __init__(self, app, names: frozenset[str] | Callable[[dict], frozenset[str]]) -> None:
        self.app = app
        self.names = names if callable(names) else (lambda scope: names)  # a callable: read per request

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if header is None or not is_allowed(header, self.names(scope)):
                status, payload = refusal(header)
                await send_json(send, status, payload)
                return
        await self.app(scope, receive, send)

