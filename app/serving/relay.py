"""One request forwarded to a model replica, its answer passed back (an ASGI response).

The body goes as the client sent it and the answer comes back as the replica sends it: status,
headers and body pieces, an SSE stream included, are not decoded or re-encoded. Only errors are
rewritten, so that they name the model in our error shape (app/serving/answers.py): an error
answer (status >= 400, small), and an error event inside a stream (found by a substring test).

Two timers per request, none per piece: the request's deadline and the client going away both
cancel the request's task; its ``finally`` closes the replica connection, and vLLM aborts the
generation when its client (this router) leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response

from app.serving import answers
from app.serving.proxy import Connection, Upstream, UpstreamError

ERROR_EVENT = answers.ERROR_EVENT.encode()
DONE = answers.DONE.encode()
MAX_ERROR_BYTES = 1 << 20  # an error answer is read whole to rewrite it; beyond this it passes as is


@dataclass(frozen=True)
class Call:
    """One request for a model, as the router forwards it."""

    path: bytes  # with its query
    headers: list[tuple[bytes, bytes]]
    body: bytes
    model_id: str
    streaming: bool
    deadline: float  # on the event loop's clock


def _renamed(call: Call, data: bytes, error_seen: Callable[[], None]) -> bytes:
    """A piece of the model's stream; an error event in it (the engine failed mid-stream) names the model."""
    if ERROR_EVENT not in data:
        return data
    error_seen()
    return answers.named_errors(call.model_id, data.decode()).encode()


class Relay(Response):
    """A Response only so that frameworks pass it on as one (it builds its answer itself).

``failed_early(exc)``: the replica could not be reached before anything was answered; returns
    the response to give instead (the router's slow path), which this response then sends.
    ``error_seen()``: the replica sent an error (its engine may be dead): the router drops its lease."""

    def __init__(self, upstream: Upstream, call: Call, timeout_s: float, done: Callable[[], None],
                 failed_early: Callable[[UpstreamError], Awaitable] | None, error_seen: Callable[[], None]) -> None:
        self.background = None  # FastAPI sets it on Responses; they run after the answer (none here)
        self.upstream, self.call, self.timeout_s = upstream, call, timeout_s
        self.model_id, self.streaming = call.model_id, call.streaming
        self.done, self.failed_early, self.error_seen = done, failed_early, error_seen
        self.stopped: str | None = None  # "deadline" or "gone" once either has cancelled the request
        self.started = False  # whether the answer's head has gone to the client
        self.complete = False  # whether all of it has

    async def __call__(self, scope, receive, send) -> None:
        task = asyncio.current_task()

        def stop(why: str) -> None:
            if self.stopped is None and not self.complete:
                self.stopped = why
                task.cancel()

        timer = asyncio.get_running_loop().call_at(self.call.deadline, stop, "deadline")
        gone = asyncio.ensure_future(_disconnected(receive))
        gone.add_done_callback(lambda watch: watch.cancelled() or stop("gone"))
        conn: Connection | None = None
        instead = None
        try:
            try:
                conn = await self.upstream.request(b"POST", self.call.path, self.call.headers, self.call.body)
                if conn.status >= 500 and self.failed_early is not None:  # vLLM's answer when its engine is dead
                    raise UpstreamError(await self._error_text(conn), False)
            except UpstreamError as exc:
                if exc.answered or self.failed_early is None:
                    raise
                timer.cancel()
                gone.cancel()
                instead = await self.failed_early(exc)
            if instead is None:
                await self._relay(conn, send)
                self.upstream.finished(conn)
                conn = None
        except asyncio.CancelledError:
            if self.stopped is None or task.uncancel():
                raise  # cancelled from outside (the server stops): not ours to answer
            if self.stopped == "deadline":
                await self._deadline(send)
        except UpstreamError as exc:
            self.error_seen()
            await self._failed(exc, send)
        finally:
            timer.cancel()
            gone.cancel()
            if conn is not None:
                conn.close()  # the replica sees its client leave and aborts the generation
            self.done()
        if instead is not None:
            await instead(scope, receive, send)  # the slow path's answer, which counts itself

    async def _relay(self, conn: Connection, send) -> None:
        if conn.status >= 400:
            return await self._error_answer(conn, send)
        await send({"type": "http.response.start", "status": conn.status, "headers": conn.headers})
        self.started = True
        if self.streaming:
            await self._pipe(conn, send)
        else:
            while (data := await conn.read()) is not None:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        self.complete = True  # before the last send: after it, uvicorn tells the watch the client is done
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pipe(self, conn: Connection, send) -> None:
        """A stream's pieces go on to the client from the replica connection's own callback, as
        they arrive: no task switch per piece (measured with bench/overhead, 2 rounds: the router's
        CPU per streamed piece at concurrency 8 went from ~28 to ~14 µs). Only a client that reads slowly makes a send wait; then the replica's
        bytes are held (reading paused) until it has caught up."""
        backlog: deque[dict] = deque()
        finishing: list[asyncio.Task] = []

        def write(data: bytes) -> None:
            message = {"type": "http.response.body", "body": _renamed(self.call, data, self.error_seen),
                       "more_body": True}
            if finishing:
                backlog.append(message)
                return
            coro = send(message)
            try:
                waiting_for = coro.send(None)  # runs to its end unless the client's socket is full
            except StopIteration:
                return
            conn.pause()
            finishing.append(asyncio.ensure_future(self._finish(coro, waiting_for, backlog, send, conn, finishing)))

        for piece in conn.take_buffered():
            write(piece)
        conn.sink = write
        try:
            await conn.body_done()
            while finishing:
                await asyncio.shield(finishing[0])
        finally:
            conn.sink = None
            for task in finishing:
                task.cancel()

    @staticmethod
    async def _finish(coro, waiting_for, backlog: deque, send, conn: Connection, finishing: list) -> None:
        """Drive a send that had to wait to its end, then the pieces that came meanwhile."""
        try:
            while True:
                if isinstance(waiting_for, asyncio.Future):
                    await asyncio.wait([waiting_for])
                else:
                    await asyncio.sleep(0)
                try:
                    waiting_for = coro.send(None)
                except StopIteration:
                    break
            while backlog:
                await send(backlog.popleft())
        finally:
            finishing.clear()
            conn.resume()

    async def _error_text(self, conn: Connection) -> str:
        """The message of an error answer (which ends the use of this connection)."""
        raw = await _whole(conn)
        self.upstream.finished(conn)
        message = json.loads(answers.from_engine_answer(self.model_id, conn.status, raw).body)["error"]["message"]
        return message.removeprefix(f"model {self.model_id!r} failed while answering: ")

    async def _error_answer(self, conn: Connection, send) -> None:
        if conn.status >= 500:
            self.error_seen()
        response = answers.from_engine_answer(self.model_id, conn.status, await _whole(conn), self.call.path.decode())
        self.complete = True
        await response({"type": "http"}, _no_receive, send)
        self.started = True

    async def _deadline(self, send) -> None:
        if not self.started:
            response = answers.deadline(self.model_id, self.timeout_s)
            await response({"type": "http"}, _no_receive, send)
        elif self.streaming:
            await self._events(send, answers.deadline_event(self.model_id, self.timeout_s))

    async def _failed(self, exc: UpstreamError, send) -> None:
        if not self.started:
            await answers.engine_error(self.model_id, exc)({"type": "http"}, _no_receive, send)
        elif self.streaming:
            await self._events(send, answers.engine_error_event(self.model_id, exc))

    @staticmethod
    async def _events(send, event: str) -> None:
        await send({"type": "http.response.body", "body": event.encode() + DONE, "more_body": False})


async def after_heartbeats(upstream: Upstream, call: Call, timeout_s: float,
                           error_seen: Callable[[], None]) -> AsyncIterator[bytes | str]:
    """The model's own stream for a request whose heartbeats have gone out (status 200 is sent):
    an error answer or a failure becomes an error event, then ``[DONE]``."""
    conn = None
    try:
        async with asyncio.timeout_at(call.deadline):
            conn = await upstream.request(b"POST", call.path, call.headers, call.body)
            if conn.status >= 400:
                if conn.status >= 500:
                    error_seen()
                answer = answers.from_engine_answer(call.model_id, conn.status, await _whole(conn), call.path.decode())
                upstream.finished(conn)
                conn = None
        if conn is None:
            yield f"data: {answer.body.decode()}\n\n"
            yield answers.DONE
            return
        while True:
            async with asyncio.timeout_at(call.deadline):  # around the wait only: never around a yield
                data = await conn.read()
            if data is None:
                break
            yield _renamed(call, data, error_seen)
        upstream.finished(conn)
        conn = None
    except TimeoutError:
        yield answers.deadline_event(call.model_id, timeout_s)
        yield answers.DONE
    except UpstreamError as exc:
        error_seen()
        yield answers.engine_error_event(call.model_id, exc)
        yield answers.DONE
    finally:
        if conn is not None:
            conn.close()  # the client left (or the deadline passed): vLLM aborts the generation


async def _whole(conn: Connection) -> bytes:
    pieces, size = [], 0
    while size < MAX_ERROR_BYTES and (data := await conn.read()) is not None:
        pieces.append(data)
        size += len(data)
    return b"".join(pieces)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _no_receive():
    return {"type": "http.disconnect"}
