"""The router's HTTP client to model replicas (app/serving/proxy.py) against a real HTTP server:
keep-alive reuse, a pooled connection the replica closed meanwhile, the secret it sends, and what
it does not forward."""

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn

from app.serving.proxy import Upstream, UpstreamError
from app.web.shared_secret import HEADER

SECRET = "k" * 64


class Server:
    """uvicorn on a free port in a thread; records each request's client port and headers."""

    def __init__(self, keep_alive_s: float = 5.0) -> None:
        self.clients, self.headers = [], []
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan="off", interface="asgi3",
                                                    timeout_keep_alive=keep_alive_s))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    async def app(self, scope, receive, send) -> None:
        body = (await receive())["body"]
        self.clients.append(scope["client"][1])
        self.headers.append(dict(scope["headers"]))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"!", "more_body": False})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def server():
    made = []
    yield lambda **kw: made.append(Server(**kw)) or made[-1]
    for s in made:
        s.close()


async def roundtrip(upstream: Upstream, body: bytes, headers=()) -> bytes:
    conn = await upstream.request(b"POST", b"/v1/chat/completions", list(headers), body)
    pieces = []
    while (data := await conn.read()) is not None:
        pieces.append(data)
    upstream.finished(conn)
    return b"".join(pieces)


def test_answers_come_back_whole_over_one_kept_alive_connection(server):
    replica = server()

    async def three():
        upstream = Upstream("127.0.0.1", replica.port, SECRET)
        return [await roundtrip(upstream, json.dumps({"n": i}).encode()) for i in range(3)]

    assert asyncio.run(three()) == [b'{"n": 0}!', b'{"n": 1}!', b'{"n": 2}!']
    assert len(set(replica.clients)) == 1


def test_a_pooled_connection_the_replica_closed_is_replaced_without_an_error(server):
    replica = server(keep_alive_s=0.1)

    async def with_a_pause():
        upstream = Upstream("127.0.0.1", replica.port, SECRET)
        first = await roundtrip(upstream, b"{}")
        await asyncio.sleep(0.5)  # the replica closes the idle connection meanwhile
        return first, await roundtrip(upstream, b"{}")

    assert asyncio.run(with_a_pause()) == (b"{}!", b"{}!")
    assert len(set(replica.clients)) == 2


def test_the_secret_goes_along_and_the_clients_key_does_not(server):
    replica = server()
    headers = [(b"authorization", b"Bearer sk-llmbox-user"), (b"x-api-key", b"sk-ant"), (b"x-request-id", b"r1"),
               (HEADER.encode(), b"forged"), (b"connection", b"close")]
    asyncio.run(roundtrip(Upstream("127.0.0.1", replica.port, SECRET), b"{}", headers))
    sent = replica.headers[0]
    assert sent[HEADER.encode()] == SECRET.encode() and sent[b"x-request-id"] == b"r1"
    assert b"authorization" not in sent and b"x-api-key" not in sent


def test_a_replica_that_is_gone_is_an_error_that_says_nothing_was_answered():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(UpstreamError) as gone:
        asyncio.run(roundtrip(Upstream("127.0.0.1", port, SECRET), b"{}"))
    assert not gone.value.answered and f"127.0.0.1:{port}" in str(gone.value)
