"""CPU the :8000 guards add, in-process: the middleware chain every request passes (Host check,
JSON-only, key check, in-flight cap, body limit) and the deadline around each streamed chunk.

    python -m bench.guards [--rounds 5] [--requests 20000]

CPU from time.process_time() of this process, the bare path subtracted, per round; no server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace

from app.serving.keys import RequireKey
from app.web.hosts import AllowedHosts
from app.web.limits import BodyLimit, InFlightLimit, JsonOnly
from bench.common import median, table

HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"content-length", b"2"),
           (b"authorization", b"Bearer unused")]


async def _answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x"})


def router_chain(app):
    """The router's order (app/serving/router.py), outermost last."""
    app = BodyLimit(app, 8 << 20)
    app = InFlightLimit(app, lambda scope: scope["app"].state.max_in_flight, frozenset({"/health"}))
    app = RequireKey(app)
    app = JsonOnly(app)
    return AllowedHosts(app, lambda scope: scope["app"].state.allowed_hosts)


async def _requests(target, n: int) -> float:
    state = SimpleNamespace(api_key_hashes=(), key_file=None, keys_required=False, allowed_hosts=frozenset(),
                            max_in_flight=512)
    owner = SimpleNamespace(state=state)

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        pass

    started = time.process_time()
    for _ in range(n):
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": HEADERS, "app": owner}
        await target(scope, receive, send)
    return time.process_time() - started


async def _item():
    return 1


async def _chunks(n: int, deadline: bool) -> float:
    at = asyncio.get_running_loop().time() + 3600
    started = time.process_time()
    for _ in range(n):
        if deadline:
            async with asyncio.timeout_at(at):
                await _item()
        else:
            await _item()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    n = args.requests
    chain, chunk = [], []
    for _ in range(args.rounds):
        chain.append((asyncio.run(_requests(router_chain(_answer), n)) - asyncio.run(_requests(_answer, n))) / n * 1e6)
        chunk.append((asyncio.run(_chunks(5 * n, True)) - asyncio.run(_chunks(5 * n, False))) / (5 * n) * 1e6)
    rows = [[name, f"{median(v):.1f}", f"{min(v):.1f}-{max(v):.1f}", ", ".join(f"{x:.1f}" for x in v)]
            for name, v in (("guard chain per request", chain), ("deadline per streamed chunk", chunk))]
    print(f"{time.strftime('%Y-%m-%d')}, {args.rounds} rounds, CPU us (process_time, bare path subtracted)")
    print(table(["what", "median us", "range", "by round"], rows))


if __name__ == "__main__":
    main()
