"""Cold start: request-to-first-token for an unloaded model through llmbox, vs `vllm serve`
start-to-first-token for the same model and flags, in the same run.

llmbox breakdown: decision (request -> load starts), replica start (load starts -> the Serve
replica begins initialising), engine init (-> model ready), first token (ready -> first token).

    .venv/bin/python -m bench.coldstart [--runs 2]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import ray

from app.devtools.sandbox import control
from bench.common import box, median, table, tiny_box_entries, vllm_serve
from app.lifecycle import actor
from app import ray_head

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


def first_token(url: str, model: str) -> float:
    """Send a streaming request; return the wall time of its first data line."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**BODY, "model": model}, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: "):
                return time.time()
    raise RuntimeError("no token came back")


def replica_started_at(settings, model: str) -> float:
    """When the model's Serve replica logged that it began initialising (wall clock)."""
    logs = ray_head.temp_dir(settings) / "session_latest" / "logs" / "serve"
    newest = max(logs.glob(f"replica_model-{model}_*.log"), key=lambda p: p.stat().st_mtime)
    stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Started initializing replica", newest.read_text())
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def llmbox_cold(url: str, settings, model: str) -> dict[str, float]:
    sent = time.time()
    token = first_token(url, model)
    view = {m["id"]: m for m in ray.get(actor.handle().status.remote())["models"]}[model]
    ready_at = view["since"]  # when it entered its current state: ready
    load_start = ready_at - view["last_load_s"]
    replica = replica_started_at(settings, model)
    return {"decision": load_start - sent, "replica start": replica - load_start, "engine init": ready_at - replica,
            "first token": token - ready_at, "total": token - sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lbc", dir="/tmp"))
    ids = [f"cold-{i}" for i in range(args.runs)]
    ours, theirs = [], []
    with box(base, tiny_box_entries(*ids)) as settings:
        url = f"http://127.0.0.1:{settings.serve_port}"
        for model in ids:
            ours.append(llmbox_cold(url, settings, model))
            httpx.post(f"{url}/models/unload", json={"model": model}, headers=control(settings), timeout=120)
        for _ in range(args.runs):
            started = time.time()
            with vllm_serve(settings.models_dir / "tiny", settings.state_dir / "vllm-cache") as (bare, healthy_s, _):
                token = first_token(bare, "bare")
            theirs.append({"engine start (to healthy)": healthy_s, "first token": token - started - healthy_s,
                           "total": token - started})
    print(f"\nCold start, tiny model, median of {args.runs} runs (seconds)")
    rows = [["llmbox", k, f"{median([r[k] for r in ours]):.2f}"] for k in ours[0]]
    rows += [["vllm serve", k, f"{median([r[k] for r in theirs]):.2f}"] for k in theirs[0]]
    print(table(["path", "phase", "seconds"], rows))


if __name__ == "__main__":
    main()
