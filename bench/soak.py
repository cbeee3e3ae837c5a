"""Soak: many streams over more models than fit, for a while; then everything must come back to rest.

Three tiny models on a memory budget for two, ``--streams`` concurrent streaming clients for
``--seconds``, each request to a model chosen at random. Counted: hangs (a request with no end
within ``--hang-s``), 5xx answers, errors that show internals (ANSI codes, tracebacks, Ray ids,
pids), swaps (loads and evictions). Afterwards: requests in flight back to 0, every model
unloaded within its idle timeout + 2 s of its last use, every engine process gone. CPU per
request is counted from /proc (all of the box's processes, utime + stime).

    .venv/bin/python -m bench.soak [--streams 32] [--seconds 60] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import ray

from app import ray_head
from app.devtools.sandbox import tiny_entry, wait_for
from app.lifecycle import actor
from bench.common import box, median, percentile, table

MODELS = ("soak-a", "soak-b", "soak-c")
IDLE_TIMEOUT_S = 10
INTERNALS = re.compile(r"\x1b\[|Traceback|File \"|actor_id|[0-9a-f]{24,}|pid=\d+|ray::", re.I)


def box_cpu_s(settings) -> float:
    total = 0.0
    for pid in ray_head.pids(settings):
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def status() -> dict:
    return ray.get(actor.handle().status.remote())


async def one_stream(client: httpx.AsyncClient, url: str, model: str, hang_s: float) -> dict:
    body = {"model": model, "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    started, result = time.monotonic(), {"model": model, "status": None, "done": False, "errors": [], "beats": 0}
    try:
        async with asyncio.timeout(hang_s):
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                result["status"] = response.status_code
                if response.status_code != 200:
                    result["errors"].append((await response.aread()).decode())
                async for line in response.aiter_lines():
                    if line.startswith(": "):
                        result["beats"] += 1
                    elif line.startswith('data: {"error"'):
                        result["errors"].append(line)
                    elif line == "data: [DONE]":
                        result["done"] = True
    except TimeoutError:
        result["status"] = "hang"
    except httpx.HTTPError as exc:
        result["status"] = f"connection: {type(exc).__name__}"
    result["seconds"] = time.monotonic() - started
    return result


async def clients(url: str, streams: int, seconds: float, hang_s: float) -> list[dict]:
    deadline = time.monotonic() + seconds
    results: list[dict] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            results.append(await one_stream(client, url, random.choice(MODELS), hang_s))

    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=streams + 8)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(streams)))
    return results


def engine_pids(settings) -> set[int]:
    """The box's vLLM engine processes now."""
    found = set()
    for pid in ray_head.pids(settings):
        try:
            if psutil.Process(pid).name().startswith("VLLM"):
                found.add(pid)
        except psutil.Error:
            continue
    return found


def one_round(settings, url: str, streams: int, seconds: float, hang_s: float) -> dict:
    cpu_before, seen_engines = box_cpu_s(settings), set()
    events_before = sum(1 for _ in open(settings.state_dir / "events.jsonl")) if (settings.state_dir / "events.jsonl").exists() else 0

    async def run_and_watch():
        task = asyncio.ensure_future(clients(url, streams, seconds, hang_s))
        while not task.done():
            seen_engines.update(engine_pids(settings))
            await asyncio.sleep(1)
        return task.result()

    results = asyncio.run(run_and_watch())
    cpu_used = box_cpu_s(settings) - cpu_before
    finished = time.time()
    in_flight_at_end = sum(m["in_flight"] for m in status()["models"])
    in_flight = wait_for(lambda: (s := status()) and all(m["in_flight"] == 0 for m in s["models"]) and s, 30,
                         "in flight to be 0")
    last_used = {m["id"]: m["last_used"] or finished for m in in_flight["models"]}
    views = wait_for(lambda: (s := status()) and all(m["state"] == "unloaded" for m in s["models"]) and s,
                     IDLE_TIMEOUT_S + 60, "every model to unload", every_s=0.1)
    late = {m["id"]: m["since"] - (last_used[m["id"]] + IDLE_TIMEOUT_S) for m in views["models"]}
    time.sleep(2)
    alive = [p for p in seen_engines if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    events = [json.loads(line) for line in list(open(settings.state_dir / "events.jsonl"))[events_before:]]
    ok = [r for r in results if r["status"] == 200 and r["done"] and not r["errors"]]
    errors = [e for r in results for e in r["errors"]]
    return {
        "requests": len(results), "ok": len(ok),
        "hangs": sum(r["status"] == "hang" for r in results),
        "5xx": sum(isinstance(r["status"], int) and r["status"] >= 500 for r in results),
        "error_events": sum(1 for r in results if r["status"] == 200 and r["errors"]),
        "internals": sum(bool(INTERNALS.search(e)) for e in errors),
        "other": sorted({str(r["status"]) for r in results if r["status"] != 200 and not isinstance(r["status"], int)}),
        "loads": sum(e["kind"] == "model_loaded" for e in events),
        "evictions": sum(e["kind"] == "model_unloaded" and e.get("reason") == "evicted" for e in events),
        "p50_s": percentile([r["seconds"] for r in ok], 50) if ok else 0.0,
        "p99_s": percentile([r["seconds"] for r in ok], 99) if ok else 0.0,
        "in_flight_end": in_flight_at_end, "max_late_s": max(late.values()), "engines_alive": len(alive), "engines_seen": len(seen_engines),
        "cpu_ms_per_request": 1000 * cpu_used / max(len(results), 1),
        "sample_error": errors[0][:160] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hang-s", type=float, default=600, help="a request without an end after this is a hang")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lbk", dir="/tmp"))
    entries = "".join(tiny_entry(m, Path("{tiny}"), idle_timeout_s=IDLE_TIMEOUT_S) for m in MODELS)
    # Two tiny engines fit (~2.1-2.3 GB each measured), three do not.
    with box(base, entries, cpu_memory_budget_gb=5.0, load_wait_s=600, load_timeout_s=600) as settings:
        url = f"http://127.0.0.1:{settings.serve_port}"
        rounds = [one_round(settings, url, args.streams, args.seconds, args.hang_s) for _ in range(args.rounds)]
    print(f"\nSoak: {len(MODELS)} tiny models, budget for 2, {args.streams} concurrent streams for {args.seconds:.0f} s, "
          f"idle_timeout_s {IDLE_TIMEOUT_S}; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    keys = ["requests", "ok", "hangs", "5xx", "error_events", "internals", "loads", "evictions", "p50_s", "p99_s",
            "in_flight_end", "max_late_s", "engines_alive", "cpu_ms_per_request"]
    rows = [[i + 1, *(f"{r[k]:.2f}" if isinstance(r[k], float) else r[k] for k in keys)] for i, r in enumerate(rounds)]
    if len(rounds) > 1:
        rows.append(["median", *(f"{median([r[k] for r in rounds]):.2f}" for k in keys)])
    print(table(["round", *keys], rows))
    for i, r in enumerate(rounds):
        if r["other"] or r["sample_error"]:
            print(f"round {i + 1}: other outcomes {r['other']}; first error: {r['sample_error']}")


if __name__ == "__main__":
    main()
