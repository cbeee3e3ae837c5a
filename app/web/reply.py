"""An ASGI answer in the OpenAI error shape, sent without a framework so guards run before routing."""

from __future__ import annotations

import json
from collections.abc import Iterable

from app.openai_errors import body as error_body


async def send_json(send, status: int, payload: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


async def send_error(send, status: int, message: str, type_: str, code: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_json(send, status, error_body(message, type_, code), headers)
