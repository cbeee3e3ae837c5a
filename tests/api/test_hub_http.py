"""Hub browse and downloads through the API, against the hub stand-in (real huggingface_hub client
inside the API): search with fit, the fits filter, download with progress, register in one call,
serve-on starting a download, cancel, and refusing a download the disk cannot hold."""

import time

from app.devtools.hub_standin import LLAMA_70B_CONFIG, add_declared_model
from app.devtools.sandbox import wait_for


def wait_download(c, download_id, timeout_s=60):
    """The download's record once it has finished, and every percent seen on the way."""
    seen = []

    def finished():
        record = c.get(f"/api/downloads/{download_id}").json()
        seen.append(record["percent"])
        return record if record["state"] not in ("queued", "running") else None

    return wait_for(finished, timeout_s, f"download {download_id} to finish", every_s=0.2), seen


def test_search_sorted_by_downloads_with_a_fit_for_this_host(api, hub):
    add_declared_model(hub, "acme/huge-70b", LLAMA_70B_CONFIG, downloads=5)
    with api.client(api.reader) as c:
        body = c.get("/api/hub/search", params={"q": "acme"}).json()
        assert [r["id"] for r in body["results"]] == ["acme/tiny-chat", "acme/huge-70b"]  # by downloads
        tiny, huge = body["results"]
        assert tiny["fit"]["verdict"] == "fits" and tiny["size_bytes"] > 0
        assert huge["fit"]["verdict"] == "does not fit" and huge["fit"]["need_gb"] > 100
        assert body["host"]["kind"] == "cpu"
        fitting = c.get("/api/hub/search", params={"q": "acme", "fits": "true"}).json()["results"]
        assert [r["id"] for r in fitting] == ["acme/tiny-chat"]
        one = c.get("/api/hub/models/acme/huge-70b/fit").json()
        assert one["verdict"] == "does not fit" and one["weights_gb"] > 100 and one["kv_cache_gb"] > 0
        assert c.get("/api/hub/models/acme/nope/fit").status_code == 404


def test_download_with_progress_then_register_in_one_call(api, hub):
    hub.throttle_bps = 1_000_000
    try:
        with api.client(api.admin) as c:
            started = c.post("/api/downloads", json={"repo_id": "acme/tiny-chat"})
            assert started.status_code == 202 and started.json()["bytes_total"] > 2_000_000
            record, seen = wait_download(c, started.json()["id"])
    finally:
        hub.throttle_bps = None
    assert record["state"] == "completed" and record["percent"] == 100.0
    assert any(0 < p < 100 for p in seen)  # progress was visible on the way
    assert all(f["done"] == f["size"] for f in record["files"])
    with api.client(api.admin) as c:
        base = c.get("/api/registry").headers["etag"]
        added = c.post(f"/api/downloads/{record['id']}/register", json={"id": "tiny-from-hub"},
                       headers={"If-Match": base})
        assert added.status_code == 201, added.text
        model = c.get("/api/models/tiny-from-hub").json()
        assert model["source"] == "acme/tiny-chat" and model["serve"] is True and model["task"] == "generate"
        events = [e["kind"] for e in c.get("/api/events", params={"limit": 20}).json()["events"]]
        assert "download_completed" in events and "download_started" in events


def test_serving_a_model_that_is_not_downloaded_starts_its_download(api, hub):
    hub.add_tiny_model("acme/other-chat", seed=1)
    with api.client(api.admin) as c:
        base = c.get("/api/registry").headers["etag"]
        entry = {"id": "other", "source": "acme/other-chat", "serve": False}
        added = c.post("/api/models", json=entry, headers={"If-Match": base})
        assert added.json()["downloads"] == []  # not served: nothing to fetch yet
        toggled = c.patch("/api/models/other", json={"serve": True}, headers={"If-Match": added.headers["etag"]})
        assert toggled.status_code == 200
        assert [d["repo_id"] for d in toggled.json()["downloads"]] == ["acme/other-chat"]
        record, _ = wait_download(c, "acme--other-chat--main")
        assert record["state"] == "completed"


def test_cancel_stops_and_removes_the_partial_download(api, hub):
    hub.add_tiny_model("acme/slow-chat", seed=2)
    hub.throttle_bps = 100_000
    try:
        with api.client(api.admin) as c:
            c.post("/api/downloads", json={"repo_id": "acme/slow-chat"}).raise_for_status()
            time.sleep(1.5)
            cancelled = c.post("/api/downloads/acme--slow-chat--main/cancel").json()
            assert cancelled["state"] == "cancelled"
            served = hub.bytes_served("acme/slow-chat")
            time.sleep(1.5)
            assert hub.bytes_served("acme/slow-chat") == served  # the transfer really stopped
            assert c.post("/api/downloads/nope/cancel").status_code == 404
    finally:
        hub.throttle_bps = None
    assert not list((api.settings.models_dir / "hub").glob(".partial/acme--slow-chat*"))


def test_a_download_the_disk_cannot_hold_is_refused_before_it_starts(api, hub):
    hub.add_repo("acme/too-big", {"config.json": b"{}", "model.safetensors": b"\0" * 16},
                 declared_sizes={"model.safetensors": 10 * 1024**5})
    with api.client(api.admin) as c:
        refused = c.post("/api/downloads", json={"repo_id": "acme/too-big"})
        assert refused.status_code == 507 and refused.json()["error"]["code"] == "not_enough_disk"
        assert "free" in refused.json()["error"]["message"]
        assert all(d["repo_id"] != "acme/too-big" for d in c.get("/api/downloads").json()["downloads"])


def test_register_takes_engine_settings_and_refuses_bad_ones(api, hub):
    with api.client(api.admin) as c:
        first, _ = wait_download(c, c.post("/api/downloads", json={"repo_id": "acme/tiny-chat"}).json()["id"])
        assert first["state"] == "completed"
        served = hub.bytes_served("acme/tiny-chat")
        record = c.post("/api/downloads", json={"repo_id": "acme/tiny-chat"}).json()
        assert record["state"] == "completed" and hub.bytes_served("acme/tiny-chat") == served  # not fetched again
        base = c.get("/api/registry").headers["etag"]
        bad = c.post(f"/api/downloads/{record['id']}/register",
                     json={"id": "tiny-eager", "engine": {"dtype": "float8"}}, headers={"If-Match": base})
        assert bad.status_code == 400 and "engine.dtype" in bad.json()["error"]["message"]
        remote = c.post(f"/api/downloads/{record['id']}/register", headers={"If-Match": base},
                        json={"id": "tiny-remote", "engine": {"extra_args": {"trust_remote_code": True}}})
        assert remote.status_code == 400 and remote.json()["error"]["code"] == "not_allowed_on_host"
        assert "LLMBOX_ALLOW_REMOTE_CODE" in remote.json()["error"]["message"]
        good = c.post(f"/api/downloads/{record['id']}/register",
                      json={"id": "tiny-eager", "engine": {"dtype": "float32", "enforce_eager": True}},
                      headers={"If-Match": base})
        assert good.status_code == 201, good.text
        assert c.get("/api/models/tiny-eager").json()["engine"]["enforce_eager"] is True


def test_hub_routes_need_a_token_even_on_loopback(api, hub):
    """They call the hub with the box's HF token: no web page may trigger that with an <img> tag."""
    requests_before = sum(hub.requests.values())
    with api.client() as anonymous:
        for path in ("/api/hub/search?q=acme", "/api/hub/models/acme/tiny-chat/fit"):
            refused = anonymous.get(path)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_token", path
        assert anonymous.get("/api/models").status_code == 200  # other reads stay open on loopback
    assert sum(hub.requests.values()) == requests_before  # the hub was not called
