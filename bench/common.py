"""Shared pieces of the benchmarks: a throwaway box, a bare `vllm serve`, timing and tables."""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from app.devtools.sandbox import EMBED_ENTRY, free_port, make_box, running, tiny_entry
from app.services import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the tables
# The flags llmbox gives the tiny model (its registry entry), so both sides run the same engine;
# llmbox runs a one-device engine inside vLLM's EngineCore process (app/engines/lean.py), as
# `vllm serve` does on a GPU host, so the bare side gets that executor too.
VLLM_FLAGS = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
              "--distributed-executor-backend", "uni"]


@contextmanager
def box(base: Path, entries: str, **overrides):
    """A running box (Ray head, manager, router); yields its settings."""
    with running(make_box(base, entries, **overrides)) as settings:
        yield settings


def tiny_box_entries(*model_ids: str) -> str:
    return EMBED_ENTRY + "".join(tiny_entry(m, Path("{tiny}")) for m in model_ids)


@contextmanager
def vllm_serve(model_dir: Path, cache_dir: Path):
    """A bare `vllm serve` of the same model with the same flags; yields (url, seconds to healthy, pid).

    In this process's session, as the box is: the kernel's autogroup scheduler shares the CPU per
    session, and a server in a session of its own measured 28-56 req/s instead of 125-155 here."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(cache_dir),
           "VLLM_NO_USAGE_STATS": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("vllm")), "serve", str(model_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--served-model-name", "bare", *VLLM_FLAGS],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", proc, 600, name="vllm serve")
        yield url, time.monotonic() - started, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values)
