"""Router overhead: the tiny model through llmbox's :8000 vs the same model under a bare `vllm serve`.

Same run, same machine, same engine flags; concurrency 1 and 8, streaming and not. Prints
throughput (requests/s), the llmbox/vllm ratio (target >= 0.90) and the latency llmbox adds
at p50 and p99.

Both servers share the machine, so they take turns (a block of requests each), in alternating
order, with a pause between turns; each cell shows the median of the rounds and every round's
ratio, because single turns on a 2-core machine vary by about +-10%. Blocks, not requests
alternating one by one: one server is what a user runs, and two servers interleaving on two
cores slow each other down (both sides measured slower that way, the one with more processes
more so).

    .venv/bin/python -m bench.overhead [--requests 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from app.devtools.sandbox import ensure_ready
from bench.common import box, median, percentile, table, tiny_box_entries, vllm_serve

PAUSE_S = 2.0  # between turns, so one side's after-work does not land on the other's turn

BODY = {"messages": [{"role": "user", "content": "Tell me about the box."}], "max_tokens": 16,
        "temperature": 0, "ignore_eos": True}


async def one(client: httpx.AsyncClient, url: str, model: str, stream: bool) -> float:
    started = time.perf_counter()
    body = {**BODY, "model": model, "stream": stream}
    if stream:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for _ in response.aiter_lines():
                pass
    else:
        (await client.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()
    return time.perf_counter() - started


async def run(url: str, model: str, concurrency: int, stream: bool, requests: int) -> tuple[float, list[float]]:
    """Throughput (req/s) and per-request latencies for `requests` requests at this concurrency."""
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(3):  # warm up connections and the engine
            await one(client, url, model, stream)
        queue = asyncio.Queue()
        for _ in range(requests):
            queue.put_nowait(None)
        latencies: list[float] = []

        async def worker():
            while not queue.empty():
                queue.get_nowait()
                latencies.append(await one(client, url, model, stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started), latencies


def cell(sides: dict[str, tuple[str, str]], concurrency: int, stream: bool, requests: int,
         rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Throughput of each round and all latencies per side, the sides taking turns in alternating order."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            time.sleep(PAUSE_S)
            rate, lat = asyncio.run(run(*sides[name], concurrency, stream, requests))
            rates[name].append(rate)
            latencies[name] += lat
    return {name: (rates[name], latencies[name]) for name in sides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lbb", dir="/tmp"))
    with box(base, tiny_box_entries("tiny")) as settings:
        llmbox = f"http://127.0.0.1:{settings.serve_port}"
        ensure_ready(llmbox, "tiny", settings)
        with vllm_serve(settings.models_dir / "tiny", settings.state_dir / "vllm-cache") as (bare, _):
            sides = {"llmbox": (llmbox, "tiny"), "vllm": (bare, "bare")}
            rows = []
            for concurrency in (1, 8):
                for stream in (False, True):
                    result = cell(sides, concurrency, stream, args.requests, args.rounds)
                    (our_rates, our_lat), (their_rates, their_lat) = result["llmbox"], result["vllm"]
                    ours, theirs = median(our_rates), median(their_rates)
                    each = sorted(o / t for o, t in zip(our_rates, their_rates))  # round by round
                    rows.append([concurrency, "yes" if stream else "no", f"{ours:.1f}", f"{theirs:.1f}",
                                 f"{ours / theirs:.2f}", f"{each[0]:.2f}-{each[-1]:.2f}",
                                 f"{(percentile(our_lat, 50) - percentile(their_lat, 50)) * 1000:+.1f}",
                                 f"{(percentile(our_lat, 99) - percentile(their_lat, 99)) * 1000:+.1f}"])
    print(f"\nRouter overhead, tiny model, {args.rounds} rounds x {args.requests} requests per side and cell, "
          "16 tokens each (median req/s of the rounds)")
    print(table(["concurrency", "stream", "llmbox req/s", "vllm req/s", "ratio", "ratio by round",
                 "added p50 ms", "added p99 ms"], rows))


if __name__ == "__main__":
    main()
