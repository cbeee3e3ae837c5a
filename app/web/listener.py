"""An HTTP server inside a Serve replica (as Serve's "direct ingress" does): the router's replica
listens on :8000 itself (no proxy hop, which alone cost ~8 ms per request here), and each model
replica serves vLLM's own OpenAI app on a port of its own (app/engines/model_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

import uvicorn
from ray import serve


class _Listener(uvicorn.Server):
    """uvicorn inside a Serve replica: the replica, not uvicorn, owns the process's signals."""

    def capture_signals(self):
        return contextlib.nullcontext()


class _AfterInit:
    """Hold requests that arrive in the moment between binding the port and Serve finishing the
    replica's set-up: until then the routes cannot find their ``self``."""

    def __init__(self, app) -> None:
        self.app = app
        self.ready = False

    async def __call__(self, scope, receive, send) -> None:
        while not self.ready:
            if serve.get_replica_context().servable_object is not None:
                self.ready = True
            else:
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


# How long a new router replica waits for the port while the one it replaces closes its socket (Serve
# may start the replacement first; a stopping uvicorn closes its listening socket at once).
BIND_WAIT_S = 15.0


async def listen(app, host: str, port: int, max_connections: int | None = None,
                 keep_alive_s: float = 5.0) -> _Listener:
    """Serve ``app`` on host:port (0: a free port, then ``.port``) from this process; returns once
    it accepts connections.

    No SO_REUSEPORT: with it, any process of the same user could bind :8000 too and silently take
    part of its traffic (it happened here with a stray Serve proxy). A port that stays taken for
    BIND_WAIT_S is an error naming the port. ``max_connections``: uvicorn answers 503 beyond it
    (a backstop for idle keep-alive connections; requests are capped by InFlightLimit)."""
    deadline = asyncio.get_running_loop().time() + BIND_WAIT_S
    while True:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; no sharing
        try:
            sock.bind((host, port))
            break
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror} (another "
                                   "program listens there: stop it, or set LLMBOX_SERVE_PORT)") from None
            await asyncio.sleep(0.25)
    server = _Listener(uvicorn.Config(_AfterInit(app), lifespan="off", access_log=False, log_config=None,
                                      loop="none", limit_concurrency=max_connections,
                                      timeout_keep_alive=keep_alive_s, proxy_headers=False))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped: {serving.exception()}")
        await asyncio.sleep(0.01)
    server.serving = serving  # keep a reference: the loop holds tasks only weakly
    server.host, server.port = host, sock.getsockname()[1]  # the one the system chose for port 0
    return server
