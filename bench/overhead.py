"""Data-path overhead: the tiny model through llmbox's :8000 vs the same model under a bare `vllm serve`.

Same machine, same engine flags (bench/common.py VLLM_FLAGS); concurrency 1 and 8, streaming and
not, 16 tokens per request (``ignore_eos``). Per side and cell: requests/s, p50 / p99 latency, and
CPU ms per request per process group, read from /proc/<pid>/stat of every process before and
after each run:

- bare vLLM: ``api`` (vLLM's API server process) and ``engine`` (EngineCore and any workers);
- llmbox: ``router`` (the router replica), ``replica`` (the model replica: vLLM's API server and
  ray.serve.llm around it), ``engine`` (its EngineCore), ``ray`` (raylet, GCS, Serve controller,
  the model manager: all other processes of the box);
- ``client``: this load generator.

The primary figure is llmbox's own CPU per request: router + (replica - bare vLLM's api), which
does not depend on how the kernel shares the cores.

One server is up at a time (default): on 2 cores an idle neighbour's CPU lands on whoever is
measured (bare vLLM's multiprocessing Worker spins for seconds after each burst). ``--alternate``
keeps both up and lets them take turns, as the first version of this bench did.

The kernel's autogroup scheduler shares the CPU per session: the bare server, the box and this
load generator all run in this process's session (printed), or bare vLLM measures at a fraction
of its speed.

    .venv/bin/python -m bench.overhead [--requests 200] [--rounds 5] [--alternate]
                                       [--contend] [--worker-niceness 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import psutil

from app import ray_head
from app.devtools.sandbox import ensure_ready
from bench.common import box, median, percentile, table, tiny_box_entries, vllm_serve

PAUSE_S = 2.0  # after each run, so one run's after-work does not land on the next
TOKENS = 16
BODY = {"messages": [{"role": "user", "content": "Tell me about the box."}], "max_tokens": TOKENS,
        "temperature": 0, "ignore_eos": True}
CELLS = [(1, False), (1, True), (8, False), (8, True)]
TICK = os.sysconf("SC_CLK_TCK")


# --- load ---------------------------------------------------------------------------------
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
    """Throughput (req/s) and per-request latencies for ``requests`` requests at this concurrency."""
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_keepalive_connections=concurrency)) as client:
        for _ in range(3):  # warm up connections and the engine
            await one(client, url, model, stream)
        left = [requests]
        latencies: list[float] = []

        async def worker():
            while left[0] > 0:
                left[0] -= 1
                latencies.append(await one(client, url, model, stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started), latencies


# --- CPU from /proc -------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def groups_bare(root: int) -> dict[str, list[int]]:
    parent = psutil.Process(root)
    children = [c.pid for c in parent.children(recursive=True)]
    return {"api": [root], "engine": children}


def groups_box(settings) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"router": [], "replica": [], "engine": [], "ray": []}
    for pid in ray_head.pids(settings):
        try:
            proc = psutil.Process(pid)
            title = " ".join(proc.cmdline())
            name = proc.name()
        except psutil.Error:
            continue
        if "ServeReplica:router:Router" in title:
            found["router"].append(pid)
        elif "ServeReplica:model-tiny:" in title:
            found["replica"].append(pid)
        elif name.startswith("VLLM") and any("ServeReplica:model-tiny:" in " ".join(a.cmdline())
                                             for a in proc.parents() if _alive(a)):
            found["engine"].append(pid)
        else:
            found["ray"].append(pid)
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running()
    except psutil.Error:
        return False


def measured(groups: dict[str, list[int]], action):
    """Run ``action``; returns its result and CPU seconds per group (and this client)."""
    before = {g: sum(cpu_s(p) for p in pids) for g, pids in groups.items()}
    client_before = time.process_time()
    result = action()
    spent = {g: sum(cpu_s(p) for p in pids) - before[g] for g, pids in groups.items()}
    spent["client"] = time.process_time() - client_before
    return result, spent


# --- one side ------------------------------------------------------------------------------
def side_runs(url: str, model: str, groups, requests: int, rounds: int) -> dict:
    """Every cell ``rounds`` times on one server: rates, latencies and CPU ms per request per group."""
    out = {cell: {"rates": [], "latencies": [], "cpu": []} for cell in CELLS}
    for _ in range(rounds):
        for concurrency, stream in CELLS:
            time.sleep(PAUSE_S)
            (rate, lat), spent = measured(groups(), lambda: asyncio.run(run(url, model, concurrency, stream, requests)))
            # warm-up requests are in the CPU too: 3 more than counted
            per = {g: s * 1000 / (requests + 3) for g, s in spent.items()}
            cell = out[(concurrency, stream)]
            cell["rates"].append(rate)
            cell["latencies"] += lat
            cell["cpu"].append(per)
    return out


@contextlib.contextmanager
def contender(on: bool):
    """A CPU-bound process at normal priority (what OpenWebUI or a build is to the box)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def spread(values: list[float], digits: int = 1) -> str:
    ordered = sorted(values)
    return f"{median(ordered):.{digits}f} ({ordered[0]:.{digits}f}-{ordered[-1]:.{digits}f})"


def cpu_cell(rows: list[dict[str, float]], group: str) -> list[float]:
    return [r.get(group, 0.0) for r in rows]


def report(bare: dict, ours: dict, args) -> None:
    print(f"\nData-path overhead, {date.today()}, {os.cpu_count()} cores, tiny model, {args.rounds} rounds x "
          f"{args.requests} requests per side and cell, {TOKENS} tokens each; one server up at a time: "
          f"{'no (alternating)' if args.alternate else 'yes'}; contending CPU-bound process: "
          f"{'yes' if args.contend else 'no'}; Ray worker niceness {args.worker_niceness}")
    rows = []
    for cell in CELLS:
        b, o = bare[cell], ours[cell]
        ratio = median(o["rates"]) / median(b["rates"])
        rows.append([cell[0], "yes" if cell[1] else "no", spread(b["rates"]), spread(o["rates"]),
                     f"{ratio:.2f} ({min(o['rates']) / max(b['rates']):.2f}-{max(o['rates']) / min(b['rates']):.2f})",
                     f"{(percentile(o['latencies'], 50) - percentile(b['latencies'], 50)) * 1000:+.2f}",
                     f"{(percentile(o['latencies'], 99) - percentile(b['latencies'], 99)) * 1000:+.2f}"])
    print(table(["conc", "stream", "vllm req/s (range)", "llmbox req/s (range)", "ratio (range)", "added p50 ms",
                 "added p99 ms"], rows))
    rows = []
    for cell in CELLS:
        b, o = bare[cell]["cpu"], ours[cell]["cpu"]
        api = median(cpu_cell(b, "api"))
        own = [r["router"] + r["replica"] - api for r in o]
        rows.append([cell[0], "yes" if cell[1] else "no", spread(cpu_cell(b, "api"), 2), spread(cpu_cell(b, "engine"), 2),
                     spread(cpu_cell(b, "client"), 2), spread(cpu_cell(o, "router"), 2),
                     spread(cpu_cell(o, "replica"), 2), spread(cpu_cell(o, "engine"), 2), spread(cpu_cell(o, "ray"), 2),
                     spread(cpu_cell(o, "client"), 2), spread(own, 2)])
    print("\nCPU ms per request (median of the rounds, range); llmbox's own = router + replica - vllm's api")
    print(table(["conc", "stream", "vllm api", "vllm engine", "client", "llmbox router", "replica", "engine", "ray",
                 "client", "llmbox own"], rows))
    for concurrency in (1, 8):
        plain = [r["router"] + r["replica"] for r in ours[(concurrency, False)]["cpu"]]
        streamed = [r["router"] + r["replica"] for r in ours[(concurrency, True)]["cpu"]]
        bare_plain = median(cpu_cell(bare[(concurrency, False)]["cpu"], "api"))
        bare_streamed = median(cpu_cell(bare[(concurrency, True)]["cpu"], "api"))
        added = ((median(streamed) - median(plain)) - (bare_streamed - bare_plain)) / TOKENS
        print(f"c{concurrency}: CPU a streamed token adds beyond vLLM's own (router + replica): {added:+.4f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alternate", action="store_true", help="both servers up, taking turns (the old mode)")
    parser.add_argument("--contend", action="store_true", help="a CPU-bound process runs throughout")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="Ray's worker niceness for the box (llmbox sets 0; Ray's default is 15)")
    args = parser.parse_args()
    print(f"session {os.getsid(0)}: the bare server, the box and this load generator all run in it")
    base = Path(tempfile.mkdtemp(prefix="lbb", dir="/tmp"))
    if args.worker_niceness != 0:
        variables = ray_head.ray_variables
        ray_head.ray_variables = lambda settings: {**variables(settings), "RAY_worker_niceness": str(args.worker_niceness)}
    with contender(args.contend):
        if args.alternate:
            return alternate(base, args)
        with box(base, tiny_box_entries("tiny")) as settings:
            models_dir, cache = settings.models_dir / "tiny", settings.state_dir / "vllm-cache"
            llmbox = f"http://127.0.0.1:{settings.serve_port}"
            ensure_ready(llmbox, "tiny", settings)
            ours = side_runs(llmbox, "tiny", lambda: groups_box(settings), args.requests, args.rounds)
        with vllm_serve(models_dir, cache) as (bare_url, _, pid):
            bare = side_runs(bare_url, "bare", lambda: groups_bare(pid), args.requests, args.rounds)
    report(bare, ours, args)


def alternate(base: Path, args) -> None:
    with box(base, tiny_box_entries("tiny")) as settings:
        llmbox = f"http://127.0.0.1:{settings.serve_port}"
        ensure_ready(llmbox, "tiny", settings)
        with vllm_serve(settings.models_dir / "tiny", settings.state_dir / "vllm-cache") as (bare_url, _, pid):
            ours = {cell: {"rates": [], "latencies": [], "cpu": []} for cell in CELLS}
            bare = {cell: {"rates": [], "latencies": [], "cpu": []} for cell in CELLS}
            for round_ in range(args.rounds):
                order = [(ours, llmbox, "tiny", lambda: groups_box(settings)),
                         (bare, bare_url, "bare", lambda: groups_bare(pid))]
                for into, url, model, groups in (order if round_ % 2 == 0 else order[::-1]):
                    got = side_runs(url, model, groups, args.requests, 1)
                    for cell in CELLS:
                        for key in ("rates", "latencies", "cpu"):
                            into[cell][key] += got[cell][key]
    report(bare, ours, args)


if __name__ == "__main__":
    main()
