"""Login against the API's tokens, the session cookie, CSRF on every form, logout."""

import pytest

from app.api.tokens import TokenFile
from tests.frontend.conftest import csrf, flashes, login, post

PAGES = ["/", "/models", "/models/new", "/models/m0/edit", "/history", "/history/0", "/hub", "/downloads",
         "/events", "/dashboard/live", "/downloads/live", "/events/live"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_needs_a_login(client, page):
    response = client.get(page)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_live_panels_answer_401_to_the_page_script_when_logged_out(client):
    response = client.get("/dashboard/live", headers={"X-Requested-With": "llmbox-ui"})
    assert response.status_code == 401 and b"log in again" in response.data


def test_login_with_an_admin_token_then_logout(client, api):
    page = client.get("/login")
    assert page.status_code == 200 and b'type="password"' in page.data
    response = post(client, "/login", {"token": api.admin, "next": "/models"})
    assert response.status_code == 302 and response.headers["Location"] == "/models"
    assert b"alice" in client.get("/").data  # the API's name for the token

    cookie = client.get_cookie("llmbox_ui")
    assert cookie.http_only and cookie.same_site == "Lax"
    assert api.admin not in cookie.value  # the token stays on the server
    assert set(client.application.session_interface.get_signing_serializer(client.application).loads(cookie.value)) \
        == {"sid", "csrf", "_permanent"}

    stolen = cookie.value
    assert post(client, "/logout").headers["Location"] == "/login"
    client.set_cookie("llmbox_ui", stolen)  # a copy of the old cookie is worth nothing after logout
    assert client.get("/").status_code == 302


def test_a_wrong_token_is_refused_with_the_apis_reason(client):
    response = post(client, "/login", {"token": "llmbox_not-a-real-token"})
    assert response.status_code == 401
    assert flashes(response) == ["That token is not accepted: this token is not valid (revoked or mistyped)"]
    assert post(client, "/login", {"token": " "}).status_code == 401


def test_login_never_redirects_off_site(client, api):
    response = post(client, "/login", {"token": api.admin, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("url", ["/login", "/logout", "/reconcile", "/models/m0/toggle", "/hub/download"])
def test_every_form_needs_the_csrf_token(client, api, url):
    login(client, api.admin)
    response = client.post(url, data={"token": api.admin, "field": "serve", "value": "off", "base_revision": "0"})
    assert response.status_code == 400
    assert "This form has expired or did not come from this site" in response.get_data(as_text=True)
    wrong = client.post(url, data={"csrf_token": "x" * 43, "field": "serve"})
    assert wrong.status_code == 400


def test_a_read_only_token_can_look_but_changes_are_refused(client, api):
    login(client, api.reader)
    page = client.get("/models")
    assert page.status_code == 200 and b"Read-only token" in page.data
    response = post(client, "/models/m1/toggle", {"field": "serve", "value": "off", "base_revision": "0"},
                     follow_redirects=True)
    assert "may read but not change anything" in " ".join(flashes(response))


def test_a_revoked_token_ends_the_session(client, api):
    tokens = TokenFile(api.settings.admin_tokens_path)
    login(client, tokens.add("temp"))
    assert client.get("/models").status_code == 200
    tokens.remove("temp")
    response = client.get("/models")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    page = client.get("/login")
    assert "no longer accepts your token" in " ".join(flashes(page))
    assert client.get("/").status_code == 302


def test_login_form_renews_the_csrf_token(client, api):
    before = csrf(client)
    login(client, api.admin)
    assert csrf(client) != before  # no session state carried over from before the login


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/\\evil.example",
                                    "https://evil.example/", "/\x00/x"])
def test_login_never_redirects_off_site_through_control_characters(client, api, target):
    """Browsers drop TAB/CR/LF inside URLs: "/<TAB>/evil.example" would become "//evil.example"."""
    response = post(client, "/login", {"token": api.admin, "next": target})
    assert response.headers["Location"] == "/"


def test_a_rebinding_host_name_is_refused_before_login(client):
    refused = client.get("/login", headers={"Host": "evil.example"})
    assert refused.status_code == 421 and b"LLMBOX_ALLOWED_HOSTS" in refused.data
    assert client.post("/login", headers={"Host": "evil.example:8080"}).status_code == 421
    assert client.get("/login", headers={"Host": "127.0.0.1:8080"}).status_code == 200


def test_a_body_over_one_mib_is_refused_even_before_login(client):
    response = client.post("/login", data={"token": "x" * (2 << 20)})
    assert response.status_code == 413
