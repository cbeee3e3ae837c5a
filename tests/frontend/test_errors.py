"""Every failure is a clear message; no stack trace reaches a person."""

import pytest

from app.devtools.sandbox import free_port
from frontend import create_app
from tests.frontend.conftest import flashes, login, post, ui_for


@pytest.fixture
def no_api():
    """The UI while the management API is down (nothing listens on its port)."""
    app = create_app({"API_URL": f"http://127.0.0.1:{free_port()}", "SECRET_KEY": "s" * 40, "TESTING": True})
    client = app.test_client()
    sid = app.extensions["llmbox_logins"].add("llmbox_some-token", "alice", "admin")  # logged in before it went down
    with client.session_transaction() as session:
        session.update(sid=sid, csrf="c" * 43)
    return client


@pytest.mark.parametrize("page", ["/", "/models", "/models/m0/edit", "/history", "/hub", "/downloads", "/events"])
def test_api_down_every_page_says_so(no_api, page):
    response = no_api.get(page)
    html = response.get_data(as_text=True)
    assert response.status_code in (200, 502)
    assert "is not answering (ConnectError). Is it running? Check with ./start.sh status." in html
    assert "Traceback" not in html and "httpx" not in html


def test_api_down_writes_say_so(no_api):
    response = no_api.post("/models/m0/toggle", data={"csrf_token": "c" * 43, "field": "serve", "value": "on",
                                                       "base_revision": "1"}, follow_redirects=True)
    assert "Not changed (m0: serve on): The management API at" in flashes(response)[0]


def test_login_while_the_api_is_down(no_api):
    response = post(no_api, "/login", {"token": "x"})
    assert "Could not log in: The management API at" in flashes(response)[0]


def test_an_internal_error_shows_a_message_not_a_trace(api):
    app = ui_for(api, SECRET_KEY="s" * 40)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    client = login(app.test_client(), api.admin)
    response = client.get("/boom")
    html = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "The admin UI hit an internal error (RuntimeError); the details are in its log." in html
    assert "secret internals" not in html and "Traceback" not in html


def test_unknown_page_and_method(admin):
    assert admin.get("/no-such-page").status_code == 404
    response = admin.get("/models/m0/delete")
    assert response.status_code == 405 and "Not allowed" in response.get_data(as_text=True)


def test_events_newest_first_with_filters(admin, someone_else):
    base = someone_else.get("/api/registry").json()["revision"]
    for value in (11, 12):
        someone_else.patch("/api/models/m5", json={"idle_timeout_s": value}, headers={"If-Match": f'"{base}"'})
        base += 1
    html = admin.get("/events?kind=registry&model=m5").get_data(as_text=True)
    rows = html.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 2 and all("registry_edited" in r and "m5" in r for r in rows)
    assert f"<b>revision</b> {base}" in rows[0] and f"<b>revision</b> {base - 1}" in rows[1]  # newest first
    assert 'data-refresh="/events/live?kind=registry&amp;model=m5&amp;limit=200"' in html
    assert "No events match" in admin.get("/events?kind=nothing-like-this").get_data(as_text=True)
