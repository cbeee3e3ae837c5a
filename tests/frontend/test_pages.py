"""Every page renders from the real API, with security headers; live panels are fragments."""

import re

import pytest

from tests.frontend.conftest import flashes, post

PAGES = {"/": "Dashboard", "/models": "Models", "/models/new": "Add a model", "/models/m0/edit": "Edit m0",
         "/history": "Registry history", "/history/0": "Registry revision 0", "/hub": "Hugging Face hub",
         "/downloads": "Downloads", "/events": "Events"}
FRAGMENTS = ["/dashboard/live", "/downloads/live", "/events/live"]


@pytest.mark.parametrize("page,title", PAGES.items())
def test_page_renders(admin, page, title):
    response = admin.get(page)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, flashes(response)
    assert f"<h1>{title}" in html and "Log out" in html
    assert "Traceback" not in html
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in html and " style=" not in html  # the CSP allows no inline script or style


@pytest.mark.parametrize("url", FRAGMENTS)
def test_live_panels_are_fragments(admin, url):
    response = admin.get(url, headers={"X-Requested-With": "llmbox-ui"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<html" not in html and "<table" in html and "Updated" in html


def test_dashboard_without_a_serving_plane_says_so(admin):
    html = admin.get("/").get_data(as_text=True)
    assert "The serving plane is not running" in html
    assert 'data-refresh="/dashboard/live"' in html  # refreshes itself
    for model in ("m0", "m7"):
        assert f'data-model="{model}"' in html
    states = re.findall(r'<td class="state"><span class="badge [a-z]+">([a-z_]+)</span>', html)
    assert len(states) >= 8 and set(states) == {"unknown"}  # not made up
    assert "CPU memory budget" in html and 'id="cpu-budget"' in html and "of 8.00 GB used" in html
    assert "the serving plane is not running: run ./start.sh" in html  # Ray Serve panel: the API's reason


def test_load_now_without_a_serving_plane_shows_the_apis_reason(admin):
    response = post(admin, "/models/m0/load", {"next": "/"}, follow_redirects=True)
    assert flashes(response) == ["Could not load m0: the serving plane is not running: run ./start.sh"]
    response = post(admin, "/reconcile", {"next": "/models"}, follow_redirects=True)
    assert "Could not redeploy: the serving plane is not running" in flashes(response)[0]


def test_unknown_model_is_a_clear_404(admin):
    response = admin.get("/models/nope/edit")
    assert response.status_code == 404
    assert "no model 'nope' in the registry" in " ".join(flashes(response))


def test_static_assets_are_served_locally(admin):
    for asset in ("/static/app.js", "/static/app.css"):
        assert admin.get(asset).status_code == 200
    html = admin.get("/").get_data(as_text=True)
    assert "http://" not in html.split("<main>")[0]  # no CDN: nothing loaded from elsewhere


def test_health_needs_no_login(client):
    assert client.get("/healthz").json == {"status": "ok"}
