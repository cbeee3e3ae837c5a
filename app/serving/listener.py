"""The router's replica listens on :8000 itself (as Serve's "direct ingress" does): no proxy hop,
which alone cost ~8 ms per request here."""

from __future__ import annotations

import asyncio
import contextlib
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


async def listen(app, host: str, port: int) -> _Listener:
    """Serve ``app`` on host:port from this process; returns once it accepts connections."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A replacement replica may start before this one has finished draining: let both bind.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"the router cannot listen on {host}:{port}: {exc.strerror}") from None
    server = _Listener(uvicorn.Config(_AfterInit(app), lifespan="off", access_log=False, log_config=None,
                                      loop="none"))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            raise RuntimeError(f"the router's HTTP server on {host}:{port} stopped: {serving.exception()}")
        await asyncio.sleep(0.01)
    server.serving = serving  # keep a reference: the loop holds tasks only weakly
    return server
