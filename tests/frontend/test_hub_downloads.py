"""Hub search with fit badges and the fit filter; downloads with progress; register in one click."""

import re
import time

from tests.frontend.conftest import flashes, post


def rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-repo="([^"]+)">(.*?)</tr>', html, re.S))


def test_search_shows_size_and_fit_and_filters_on_fit(admin):
    html = admin.get("/hub?q=acme").get_data(as_text=True)
    found = rows(html)
    assert set(found) == {"acme/small-chat", "acme/small-embed", "acme/llama-70b-shaped"}
    assert list(found)[0] == "acme/llama-70b-shaped"  # sorted by downloads
    assert '<span class="badge bad">does not fit</span>' in found["acme/llama-70b-shaped"]
    assert '<span class="badge ok">fits</span>' in found["acme/small-chat"]
    assert "needs" in found["acme/small-chat"] and "KB" in found["acme/small-chat"]  # size column
    assert "Download" in found["acme/small-chat"]
    assert "Fits this host" in html and "CPU memory budget" in html

    fitting = rows(admin.get("/hub?q=acme&fits=1").get_data(as_text=True))
    assert set(fitting) == {"acme/small-chat", "acme/small-embed"}
    embed_only = rows(admin.get("/hub?q=acme&task=sentence-similarity").get_data(as_text=True))
    assert set(embed_only) == {"acme/small-embed"}
    nothing = admin.get("/hub?q=no-such-thing").get_data(as_text=True)
    assert "No models found" in nothing


def test_download_progress_then_register_in_one_click(admin, someone_else):
    started = post(admin, "/hub/download", {"repo_id": "acme/small-chat"}, follow_redirects=True)
    assert flashes(started) == ["Download of acme/small-chat started."]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = admin.get("/downloads/live", headers={"X-Requested-With": "llmbox-ui"}).get_data(as_text=True)
        row = live.split('data-download="acme--small-chat--main"')[1].split("</tr>")[0]
        if "completed" in row:
            break
        time.sleep(0.3)
    assert '<progress max="100" value="100.0"' in row and "100%" in row
    assert "Add to registry" in row

    base = someone_else.get("/api/registry").json()["revision"]
    assert f'name="base_revision" value="{base}"' in row
    added = post(admin, "/downloads/acme--small-chat--main/register", {"base_revision": base}, follow_redirects=True)
    assert f"Added small-chat to the registry (not served yet): saved as registry revision {base + 1}" \
        in flashes(added)[0]
    model = someone_else.get("/api/models/small-chat").json()
    assert model["source"] == "acme/small-chat" and model["serve"] is False
    after = admin.get("/downloads").get_data(as_text=True)
    assert 'in the registry as <a href="/models/small-chat/edit">small-chat</a>' in after

    again = post(admin, "/hub/download", {"repo_id": "acme/small-chat"}, follow_redirects=True)
    assert flashes(again) == ["Download of acme/small-chat is already complete."]


def test_download_errors_are_explained(admin):
    missing = post(admin, "/hub/download", {"repo_id": "acme/nope"}, follow_redirects=True)
    assert flashes(missing)[0].startswith("Could not download acme/nope:")
    bad = post(admin, "/hub/download", {"repo_id": "../etc"}, follow_redirects=True)
    assert flashes(bad)[0].startswith("Could not download ../etc:")
    cancel = post(admin, "/downloads/nope/cancel", follow_redirects=True)
    assert flashes(cancel) == ["Could not cancel nope: no download 'nope'"]
    resume = post(admin, "/downloads/nope/resume", follow_redirects=True)
    assert flashes(resume) == ["Could not resume nope: no download 'nope'"]


def test_cancel_and_resume(admin, hub, someone_else):
    hub.throttle_bps = 50_000  # slow enough to cancel mid-way
    try:
        post(admin, "/hub/download", {"repo_id": "acme/small-embed"})
        cancelled = post(admin, "/downloads/acme--small-embed--main/cancel", follow_redirects=True)
        assert flashes(cancelled) == ["acme--small-embed--main: cancelled, partial files removed."]
        html = admin.get("/downloads/live").get_data(as_text=True)
        row = html.split('data-download="acme--small-embed--main"')[1].split("</tr>")[0]
        assert '<span class="badge muted">cancelled</span>' in row and "Resume" in row
    finally:
        hub.throttle_bps = None
    resumed = post(admin, "/downloads/acme--small-embed--main/resume", follow_redirects=True)
    assert flashes(resumed) == ["acme--small-embed--main: resumed."]
