"""The router's own listener on :8000: it never shares the port with another process."""

import asyncio
import socket

import pytest

from app.devtools.sandbox import free_port
from app.web import listener


def test_a_port_another_process_listens_on_is_refused_even_with_so_reuseport(monkeypatch):
    """A stray listener with SO_REUSEPORT (a Serve proxy did this here) would silently take part of
    :8000's traffic if the router set SO_REUSEPORT too."""
    monkeypatch.setattr(listener, "BIND_WAIT_S", 0.5)
    port = free_port()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}: .*another program listens"):
            asyncio.run(listener.listen(lambda scope, receive, send: None, "127.0.0.1", port))
    finally:
        squatter.close()


def test_the_port_is_taken_once_its_previous_owner_lets_go(monkeypatch):
    """A replacement replica may start while the old one closes its socket: it waits for the port."""
    port = free_port()
    previous = socket.socket()
    previous.bind(("127.0.0.1", port))
    previous.listen()

    async def scenario():
        asyncio.get_running_loop().call_later(0.5, previous.close)
        server = await listener.listen(lambda scope, receive, send: None, "127.0.0.1", port)
        server.should_exit = True
        await server.serving
        return True

    assert asyncio.run(scenario())
