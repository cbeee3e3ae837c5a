"""The admin UI end to end in real headless Chromium (Debian's, driven by Playwright) against a
whole box: Ray Serve + vLLM CPU, the management API, the hub stand-in, the UI process.

Steps follow the issue: log in; search the hub stand-in; download and watch the progress bar reach
100%; add it to the registry; toggle serve and see it on :8000/v1/models; load and unload it from
the dashboard and see the state change; an edit conflict shows the conflict message. Every page
is saved as a screenshot in artifacts/ui/ (CI keeps the workspace).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app import services
from app.api.tokens import TokenFile
from app.devtools.hub_standin import HubStandin
from app.devtools.sandbox import env, free_port, make_box, running, tiny_entry
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "artifacts" / "ui"
CHROMIUM = os.environ.get("LLMBOX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOWNLOAD = "acme--tiny-chat--main"


@dataclass
class Box:
    ui: str
    serve: str
    api: httpx.Client  # "someone else": the API with another admin token
    token: str


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    hub = HubStandin(root=tmp_path_factory.mktemp("hub"))
    hub.add_tiny_model("acme/tiny-chat", downloads=10)
    hub.throttle_bps = 400_000  # ~6 s for the tiny model's 2.3 MB: progress is visible on the way
    base = Path("/tmp") / f"lbu{os.getpid()}"  # short: Ray's sockets live under it
    settings = make_box(base, tiny_entry("local-chat", Path("{tiny}")), api_port=free_port(), ui_port=free_port(),
                        load_wait_s=240, load_timeout_s=300, cpu_memory_budget_gb=8.0)
    api_url, ui = services.local_url(settings, settings.api_port), services.local_url(settings, settings.ui_port)
    try:
        with hub.serve() as hub_url, running(settings):
            variables = env(settings, LLMBOX_HF_ENDPOINT=hub_url, LLMBOX_DOWNLOAD_MIN_FREE_GB="0")
            tokens = TokenFile(settings.admin_tokens_path)
            token, other = tokens.add("ops"), tokens.add("someone-else")
            try:
                services.start(settings, "api", "app.api", f"{api_url}/api/health", env=variables)
                services.start(settings, "ui", "frontend", f"{ui}/healthz", env=variables)
                with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {other}"}, timeout=300) as api:
                    yield Box(ui, f"http://127.0.0.1:{settings.serve_port}", api, token)
            finally:
                for name in ("ui", "api"):
                    services.stop(settings, name)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def page(box):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
        tab.set_default_timeout(30_000)
        tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        tab.on("console", lambda msg: problems.append(f"console: {msg.text}")
               if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        tab.problems = problems
        yield tab
        browser.close()
    assert problems == [], problems  # no script errors, no content-security-policy violations


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def flash(page) -> str:
    return " ".join(page.locator("div.flash").first.inner_text().split())


def mark_no_reload(page) -> None:
    """A value that only survives while the page is not reloaded."""
    page.evaluate("window.__sameDocument = true")


def still_same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_log_in(page, box):
    page.goto(box.ui + "/")
    assert page.url.startswith(box.ui + "/login")
    shot(page, "01-login")
    page.fill("#token", "llmbox_wrong")
    page.click("button[type=submit]")
    assert "That token is not accepted" in flash(page)
    page.fill("#token", box.token)
    page.click("button[type=submit]")
    page.wait_for_url(box.ui + "/")
    assert "ops · admin" in page.inner_text("header")
    assert page.locator('tr[data-model="local-chat"] td.state').inner_text().startswith("unloaded")
    health = page.locator("#serve-health tr", has_text="router").inner_text()
    assert "RUNNING" in health and page.locator("h2 .badge").inner_text() == "healthy"  # Ray Serve's health
    shot(page, "02-dashboard")


def test_hub_search_and_download_to_100_percent(page, box):
    page.click("nav >> text=Hub")
    page.fill("input[name=q]", "tiny")
    page.check("input[name=fits]")
    page.click("form.search button")
    row = page.locator('tr[data-repo="acme/tiny-chat"]')
    assert row.locator("td.fit .badge").inner_text() == "fits"
    assert "MB" in row.inner_text()  # its size
    shot(page, "03-hub")

    row.locator("button:has-text('Download')").click()
    page.wait_for_url(box.ui + "/downloads")
    mark_no_reload(page)
    bar = page.locator(f'tr[data-download="{DOWNLOAD}"] progress')
    seen, deadline, middle_shot = [], time.monotonic() + 120, False
    while time.monotonic() < deadline:
        seen.append(float(bar.get_attribute("value")))
        if 0 < seen[-1] < 100 and not middle_shot:
            shot(page, "04-download-progress")
            middle_shot = True
        if seen[-1] >= 100:
            break
        page.wait_for_timeout(250)
    assert seen[-1] == 100, seen
    assert any(0 < v < 100 for v in seen), f"no progress seen on the way: {seen}"
    assert still_same_document(page)  # the bar moved without a page reload
    page.locator(f'tr[data-download="{DOWNLOAD}"] .badge:has-text("completed")').wait_for()
    shot(page, "05-download-complete")


def test_add_to_registry_edit_and_serve(page, box):
    row = page.locator(f'tr[data-download="{DOWNLOAD}"]')
    row.locator("input[name=serve]").uncheck()
    page.locator("h1").click()  # the focus leaves the box; the next refresh must keep it unticked
    before = page.inner_text("p.updated")
    page.wait_for_function("t => document.querySelector('p.updated').textContent !== t", arg=before)
    assert not row.locator("input[name=serve]").is_checked()
    row.locator("button:has-text('Add to registry')").click()
    page.wait_for_url(box.ui + "/models")
    assert "Added tiny-chat to the registry (not served yet)" in flash(page)
    ids = [m["id"] for m in httpx.get(f"{box.serve}/v1/models").json()["data"]]
    assert "tiny-chat" not in ids and "local-chat" in ids

    # The register call takes the hub's defaults; CPU vLLM needs these engine settings for the tiny model.
    page.locator('tr[data-model="tiny-chat"] a:has-text("Edit")').click()
    page.select_option("select[name=engine_dtype]", "float32")
    page.fill("input[name=engine_max_model_len]", "512")
    page.check("input[name=engine_enforce_eager]")
    shot(page, "06-model-edit")
    page.click("button:has-text('Save')")
    page.wait_for_url(box.ui + "/models")
    assert "tiny-chat: saved as registry revision" in flash(page)
    engine = box.api.get("/api/models/tiny-chat").json()["engine"]
    assert engine["dtype"] == "float32" and engine["max_model_len"] == 512 and engine["enforce_eager"] is True

    page.click('tr[data-model="tiny-chat"] button[title="Turn serve on"]')
    page.wait_for_url(box.ui + "/models")
    assert "tiny-chat: serve on: saved as registry revision" in flash(page) and "and applied" in flash(page)
    assert page.locator('tr[data-model="tiny-chat"] button.toggle').first.inner_text() == "on"
    shot(page, "07-models")
    card = next(m for m in httpx.get(f"{box.serve}/v1/models").json()["data"] if m["id"] == "tiny-chat")
    assert card["state"] == "unloaded"


def test_load_and_unload_from_the_dashboard(page, box):
    page.click("nav >> text=Dashboard")
    state = page.locator('tr[data-model="tiny-chat"] td.state .badge')
    assert state.inner_text() == "unloaded"
    page.click('tr[data-model="tiny-chat"] button:has-text("Load")')
    page.wait_for_url(box.ui + "/")
    assert "tiny-chat: load started (now loading)" in flash(page)
    mark_no_reload(page)
    seen = [state.inner_text()]
    shot(page, "08-dashboard-loading")
    deadline = time.monotonic() + 240
    while seen[-1] == "loading" and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        seen.append(state.inner_text())
    assert seen[0] == "loading" and seen[-1] == "ready", seen
    assert still_same_document(page)  # the state changed on the page by itself
    assert page.locator('tr[data-model="tiny-chat"] td').nth(2).inner_text().startswith(("0.", "1.", "2.", "3."))
    assert "tiny-chat" in page.locator("section.card").nth(1).inner_text()  # holds part of the CPU budget
    shot(page, "09-dashboard-ready")
    assert httpx.get(f"{box.serve}/v1/models/tiny-chat").json()["state"] == "ready"

    page.click('tr[data-model="tiny-chat"] button:has-text("Unload")')
    page.wait_for_url(box.ui + "/")
    assert "tiny-chat: unloaded (now unloaded)" in flash(page)
    assert state.inner_text() == "unloaded"
    shot(page, "10-dashboard-unloaded")


def test_an_edit_conflict_shows_the_message_and_keeps_the_edit(page, box):
    page.click("nav >> text=Models")
    page.locator('tr[data-model="local-chat"] a:has-text("Edit")').click()
    base = int(page.locator("input[name=base_revision]").get_attribute("value"))
    page.fill("input[name=idle_timeout_s]", "900")
    theirs = box.api.patch("/api/models/local-chat", json={"idle_timeout_s": 60}, headers={"If-Match": f'"{base}"'})
    assert theirs.status_code == 200  # someone else saved first
    page.click("button:has-text('Save')")
    message = " ".join(page.locator("#conflict").inner_text().split())
    assert (f"Someone else changed the registry (now revision {base + 1}). Reload to see their change; "
            "your edit was not applied.") in message
    assert page.input_value("input[name=idle_timeout_s]") == "900"  # the edit is still on screen
    shot(page, "11-edit-conflict")
    assert box.api.get("/api/models/local-chat").json()["idle_timeout_s"] == 60
    page.click("#conflict a:has-text('Reload')")
    assert page.input_value("input[name=idle_timeout_s]") == "60"


def test_history_and_events(page, box):
    page.click("nav >> text=History")
    current = box.api.get("/api/registry").json()["revision"]
    assert f"Current revision {current}" in page.inner_text(".heading")
    shot(page, "12-history")
    page.click(f'a[href="/history/{current}"] >> nth=0')
    assert "+      idle_timeout_s: 60" in page.inner_text("#diff")
    shot(page, "13-history-diff")

    page.click("nav >> text=Events")
    first = page.locator("#events tbody tr").first
    assert first.locator("td.kind").inner_text() == "registry_edited"  # newest first: the last edit
    assert "local-chat" in first.inner_text() and "someone-else" in first.inner_text()
    kinds = page.locator("#events td.kind").all_inner_texts()
    assert "model_loaded" in kinds and "model_unloaded" in kinds and "download_completed" in kinds
    shot(page, "14-events")
