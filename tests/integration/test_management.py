"""The management API driving a real serving plane (Ray Serve + vLLM CPU) and a hub stand-in.

Covers what needs the whole box: load / unload now, status and Serve's health, turning serve on
for a model that is not downloaded (it downloads, shows as downloading on :8000, then serves),
the measured footprint replacing the fit estimate, and reconcile leaving other models alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest

from app import services
from app.api.tokens import TokenFile
from app.devtools.hub_standin import HubStandin
from app.devtools.sandbox import EMBED_ENTRY, env, free_port, make_box, running, tiny_entry, wait_for
from app.events import EventLog

pytestmark = pytest.mark.slow
TINY_ENGINE = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}
API_ENV: dict[str, str] = {}  # the environment the module's API (and UI) processes run with


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    hub = HubStandin(root=tmp_path_factory.mktemp("hub"))
    hub.add_tiny_model("acme/tiny-chat", downloads=10)
    hub.throttle_bps = 400_000  # ~6 s for the tiny model's 2.3 MB: the downloading state is observable
    base = Path("/tmp") / f"lbm{os.getpid()}"
    settings = make_box(base, EMBED_ENTRY + tiny_entry("local-chat", Path("{tiny}")), api_port=free_port(),
                        ui_port=free_port(), load_wait_s=240, load_timeout_s=300, cpu_memory_budget_gb=8.0)
    api_url = services.local_url(settings, settings.api_port)
    with hub.serve() as hub_url, running(settings):
        token = TokenFile(settings.admin_tokens_path).add("ops")
        try:
            API_ENV.update(env(settings, LLMBOX_HF_ENDPOINT=hub_url, LLMBOX_DOWNLOAD_MIN_FREE_GB="0"))
            services.start(settings, "api", "app.api", f"{api_url}/api/health", env=API_ENV)
            yield settings, httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=300)
        finally:
            services.stop(settings, "api")
            services.stop(settings, "ui")


def test_status_and_serve_health(box):
    _, api = box
    status = api.get("/api/status").json()
    models = {m["id"]: m for m in status["models"]}
    assert models["embed"]["state"] == "ready" and models["embed"]["memory_gb"] > 0.3
    assert models["local-chat"]["state"] == "unloaded"
    cluster = api.get("/api/cluster").json()
    assert cluster["applications"]["router"]["status"] == "RUNNING"
    assert cluster["applications"]["model-embed"]["status"] == "RUNNING"
    assert cluster["proxies"] == {}  # no Serve proxy: the router's replica listens on :8000 itself
    gpu = api.get("/api/gpu").json()  # this host has no GPU: the CPU budget, with what holds it
    assert gpu["gpu"] is False and gpu["cpu_budget"]["total_gb"] == 8.0
    assert [m["id"] for m in gpu["cpu_budget"]["models"]] == ["embed"]


def test_restarting_the_api_and_the_ui_never_touches_serving(box):
    settings, api = box
    serve_url = f"http://127.0.0.1:{settings.serve_port}"
    before = api.get("/api/models/embed").json()
    assert before["state"] == "ready" and before["pids"]
    ui_url = services.local_url(settings, settings.ui_port)
    for _ in range(2):  # start, then restart, the UI; restart the API each time
        services.stop(settings, "ui")
        services.start(settings, "ui", "frontend", f"{ui_url}/healthz", env=API_ENV)
        services.stop(settings, "api")
        assert httpx.get(f"{serve_url}/v1/models/embed", timeout=30).json()["state"] == "ready"  # API down: serving on
        services.start(settings, "api", "app.api", f"{services.local_url(settings, settings.api_port)}/api/health",
                       env=API_ENV)
    after = api.get("/api/models/embed").json()
    assert after["state"] == "ready" and after["pids"] == before["pids"]  # the same replica and engine
    assert not [e for e in EventLog(settings.state_dir / "events.jsonl").read(kind="model_unloaded")
                if e["model"] == "embed"]


def test_load_now_and_unload_now(box):
    settings, api = box
    started = api.post("/api/models/local-chat/load")
    assert started.status_code == 200 and started.json()["state"] == "loading"
    ready = wait_for(lambda: (m := api.get("/api/models/local-chat").json())["state"] != "loading" and m, 300,
                     "local-chat to finish loading")
    assert ready["state"] == "ready" and ready["memory_gb"] > 0.5 and ready["last_load_s"] > 0
    gone = api.post("/api/models/local-chat/unload").json()
    assert gone["state"] == "unloaded"
    kinds = [(e["kind"], e.get("reason")) for e in EventLog(settings.state_dir / "events.jsonl").read(4)]
    assert kinds[:2] == [("model_unload_requested", None), ("model_unloaded", "manual")]
    assert ("model_loaded", None) in kinds
    assert api.post("/api/models/nope/load").status_code == 404


def test_serving_a_model_that_is_not_downloaded_downloads_it_then_serves_it(box):
    settings, api = box
    serve_url = f"http://127.0.0.1:{settings.serve_port}"
    embed_pids = api.get("/api/models/embed").json()["pids"]
    base = api.get("/api/registry").headers["etag"]
    entry = {"id": "hub-chat", "source": "acme/tiny-chat", "serve": True, "memory_gb": 2.3, "engine": TINY_ENGINE}
    added = api.post("/api/models", json=entry, headers={"If-Match": base})
    assert added.status_code == 201, added.text
    assert [d["repo_id"] for d in added.json()["downloads"]] == ["acme/tiny-chat"]
    assert added.json()["applied"]["ok"] is True

    # While it downloads, :8000 says so, with progress, and requests get a 503 that says why.
    card = httpx.get(f"{serve_url}/v1/models/hub-chat").json()
    assert card["state"] == "downloading" and 0 <= card["download"]["percent"] < 100
    refused = httpx.post(f"{serve_url}/v1/chat/completions",
                         json={"model": "hub-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_downloading"
    assert int(refused.headers["retry-after"]) >= 1

    done = wait_for(lambda: (d := api.get("/api/downloads/acme--tiny-chat--main").json())["state"]
                    in ("completed", "failed") and d, 120, "the download of acme/tiny-chat to finish")
    assert done["state"] == "completed" and done["bytes_done"] == done["bytes_total"]
    assert httpx.get(f"{serve_url}/v1/models/hub-chat").json()["state"] == "unloaded"

    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=300)
    reply = client.chat.completions.create(model="hub-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None

    # The measured footprint now replaces the estimate for this repo.
    measured = api.get("/api/models/hub-chat").json()["memory_gb"]
    fit = api.get("/api/hub/models/acme/tiny-chat/fit").json()
    assert fit["basis"] == "measured" and fit["need_gb"] == pytest.approx(measured, abs=0.01)

    # Adding, loading and reconciling touched no other model's replica.
    assert api.post("/api/reconcile").json()["actions"]["embed"] == "ready"
    assert api.get("/api/models/embed").json()["pids"] == embed_pids
