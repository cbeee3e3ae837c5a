"""Idle unload: how late after its idle timeout a model is unloaded, and how much memory comes back.

For each run: load a tiny model with a short idle timeout, send one request, then watch the
manager until the model is unloaded. "Late by" is the time from (last request end + timeout)
to the moment the model's engine is gone (state unloaded). Memory is the host's available RAM
(what other models or programs can use) before the load, while loaded, and after the unload.

    .venv/bin/python -m bench.idle [--runs 3] [--timeout 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import ray

from app.devtools.sandbox import EMBED_ENTRY, ensure_ready, tiny_entry, wait_for
from app.lifecycle import actor
from bench.common import box, median, table

GIB = 1024**3


def available_gb() -> float:
    return psutil.virtual_memory().available / GIB


def view(model: str) -> dict:
    return {m["id"]: m for m in ray.get(actor.handle().status.remote())["models"]}[model]


def one_run(url: str, model: str, timeout_s: int, settings) -> dict[str, float]:
    before = available_gb()
    ensure_ready(url, model, settings)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).raise_for_status()
    loaded = available_gb()
    last_used = view(model)["last_used"]
    v = wait_for(lambda: (m := view(model))["state"] == "unloaded" and m, timeout_s + 120, f"{model} to unload",
                 every_s=0.1)
    time.sleep(2)  # let the kernel account for the engine's freed pages
    return {"late_s": v["since"] - (last_used + timeout_s), "measured_gb": v["memory_gb"] or 0.0,
            "taken_gb": before - loaded, "returned_gb": available_gb() - loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=5, help="idle_timeout_s of the model")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lbi", dir="/tmp"))
    entries = EMBED_ENTRY + tiny_entry("idle", Path("{tiny}"), idle_timeout_s=args.timeout)
    with box(base, entries) as settings:
        url = f"http://127.0.0.1:{settings.serve_port}"
        runs = [one_run(url, "idle", args.timeout, settings) for _ in range(args.runs)]
    print(f"\nIdle unload, tiny model, idle_timeout_s={args.timeout}, {args.runs} runs")
    rows = [[i + 1, f"{r['late_s']:.2f}", f"{r['measured_gb']:.2f}", f"{r['taken_gb']:.2f}", f"{r['returned_gb']:.2f}"]
            for i, r in enumerate(runs)]
    rows.append(["median", *(f"{median([r[k] for r in runs]):.2f}"
                             for k in ("late_s", "measured_gb", "taken_gb", "returned_gb"))])
    print(table(["run", "unloaded late by (s)", "engine PSS (GB)", "RAM taken by load (GB)",
                 "RAM back after unload (GB)"], rows))


if __name__ == "__main__":
    main()
