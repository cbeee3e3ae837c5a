"""The router's side of the data path: HTTP/1.1 to a model replica's own vLLM app, bytes unchanged.

Each replica (app/engines/model_server.py) serves vLLM's OpenAI app on a port of its own; the
router forwards a request's body as it came and passes the answer back as it comes (status,
headers, body pieces; an SSE stream is never decoded and re-encoded). Connections are kept alive
and reused, one pool per replica; the response is parsed by httptools (uvicorn's C parser).
A client of its own rather than httpx or aiohttp: it does only what this proxy needs, and a
stream's pieces can be handed on from the transport's callback (``sink``, app/serving/relay.py).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Iterable

import httptools

from app.web.shared_secret import HEADER as SECRET_HEADER

IDLE_S = 30.0  # a pooled connection unused this long is closed (the replica keeps them 120 s)
MAX_IDLE = 64  # pooled connections per replica beyond which finished ones are closed
PAUSE_BYTES = 1 << 20  # stop reading from the replica while this much waits for a slow client
# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself are not forwarded; nor is the
# client's key: the replica has no use for it.
_DROP_REQUEST = frozenset({b"host", b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
                           b"upgrade", b"proxy-authorization", b"proxy-connection", b"content-length",
                           b"authorization", b"x-api-key", SECRET_HEADER.encode()})
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})


class UpstreamError(ConnectionError):
    """The replica could not be reached, or closed the connection before its answer was complete.
    ``answered``: whether any of the answer had arrived (else the request may be sent again)."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._head_done = False
        self._keep_alive = False
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._paused = False
        self.sink = None  # called with each body piece as it arrives, instead of buffering (streams)

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the replica's answer is not valid HTTP: {exc}", self._head_done))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            self._fail(UpstreamError("the replica closed the connection", self._head_done or bool(self._pieces)))

    # --- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in _DROP_RESPONSE:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()  # llhttp knows it here, not after the body
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            try:
                self.sink(body)
            except Exception as exc:  # noqa: BLE001 - it runs in the transport's callback: end the request
                self._fail(UpstreamError(f"passing the answer on failed: {exc!r}", True))
                self.close()
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > PAUSE_BYTES and not self._paused:
            self.pause()
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._wake()

    # --- the proxy's side --------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        self._wake()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        self.transport.write(head + body)  # one write: writelines may send the head and body as two segments

    async def response_head(self) -> None:
        """Wait for the status line and headers (``status``, ``headers``)."""
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes | None:
        """What has arrived of the body since the last call (at least one byte), None at its end."""
        while not self._pieces:
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        if self._paused:
            self.resume()
        return data

    async def body_done(self) -> None:
        """Wait until the whole body has arrived (through ``sink``)."""
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()

    def take_buffered(self) -> list[bytes]:
        """What arrived before a ``sink`` was set."""
        pieces, self._pieces, self._buffered = self._pieces, [], 0
        return pieces

    def pause(self) -> None:
        """Stop reading from the replica (the client is slower than it)."""
        self._paused = True
        self.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        if not self.closed:
            self.transport.resume_reading()

    def reusable(self) -> bool:
        return self._complete and not self.closed and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Upstream:
    """The pooled connections to one replica endpoint."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port = host, port
        self._host_header = f"{host}:{port}".encode()
        self._secret = secret.encode()
        self._idle: deque[Connection] = deque()
        # Carrying a request now (weak: a relay that closes its connection on an error forgets it here).
        self._busy: weakref.WeakSet[Connection] = weakref.WeakSet()

    def _head(self, method: bytes, path: bytes, headers: Iterable[tuple[bytes, bytes]], length: int) -> bytes:
        lines = [method, b" ", path, b" HTTP/1.1\r\nhost: ", self._host_header, b"\r\ncontent-length: ",
                 str(length).encode(), b"\r\n", SECRET_HEADER.encode(), b": ", self._secret, b"\r\n"]
        for name, value in headers:
            if name not in _DROP_REQUEST:
                lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(Connection, self.host, self.port)
        except OSError as exc:
            raise UpstreamError(f"cannot reach the replica at {self.host}:{self.port}: {exc.strerror or exc}",
                                False) from None
        return conn

    def _pooled(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    async def request(self, method: bytes, path: bytes, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes) -> Connection:
        """Send a request; returns its connection once the answer's head has arrived. A reused
        connection that the replica had closed meanwhile is retried once on a new one."""
        head = self._head(method, path, headers, len(body))
        conn = self._pooled()
        if conn is not None:
            try:
                return await self._exchange(conn, head, body)
            except UpstreamError as exc:
                if exc.answered:
                    raise
        return await self._exchange(await self._connect(), head, body)

    async def _exchange(self, conn: Connection, head: bytes, body: bytes) -> Connection:
        self._busy.add(conn)
        conn.send(head, body)
        try:
            await conn.response_head()
        except BaseException:  # cancelled included (deadline, client gone): vLLM sees us leave
            self._busy.discard(conn)
            conn.close()
            raise
        return conn

    def finished(self, conn: Connection) -> None:
        """The request on ``conn`` is over: keep the connection if it can carry another."""
        self._busy.discard(conn)
        if conn.reusable() and len(self._idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self, abort: bool = False) -> None:
        """Close the pooled connections (``abort``: and those carrying a request, whose relays then
        end with an error: the replica is gone)."""
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy) if abort else ():
            conn.close()
        self._busy.clear()
