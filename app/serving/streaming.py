"""An SSE response that stops the model's generation when the client goes away.

Starlette's StreamingResponse stops sending on a disconnect but leaves our generator suspended,
so the engine kept generating for a client that had left (and the request stayed counted in
flight). This response watches for the disconnect itself and closes the generator at once; the
generator's ``finally`` cancels the request on the model replica (vLLM then aborts it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from starlette.responses import StreamingResponse


class EngineStream(StreamingResponse):
    def __init__(self, chunks: AsyncGenerator[str | bytes, None], done: Callable[[], None]) -> None:
        super().__init__(chunks, media_type="text/event-stream")
        self.chunks, self.done = chunks, done

    async def __call__(self, scope, receive, send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.chunks.aclose()  # runs the generator's finally: the engine's request is cancelled
            self.done()

    async def _pump(self, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.chunks:
            body = chunk if isinstance(chunk, bytes) else chunk.encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
