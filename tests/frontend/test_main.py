"""``python -m frontend``: serves on loopback with a generated secret; refuses to be exposed
without a token, like the management API."""

import stat

import httpx
import pytest

from app import services
from app.devtools.sandbox import env, free_port
from app.settings import Settings
from tests.api.conftest import running_api


def start_ui(settings: Settings) -> str:
    """``python -m frontend`` with these settings, as ./start.sh starts it; its URL once /healthz answers."""
    url = services.local_url(settings, settings.ui_port)
    services.start(settings, "ui", "frontend", f"{url}/healthz", env=env(settings))
    return url


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    settings = Settings(host="0.0.0.0", state_dir=tmp_path, ui_port=free_port())
    with pytest.raises(RuntimeError, match="^ui exited with 2") as refused:
        start_ui(settings)
    assert "[llmbox-ui] refusing to start: LLMBOX_HOST=0.0.0.0 is reachable beyond this machine" in str(refused.value)


def test_serves_on_loopback(tmp_path, hub):
    # The API served over HTTP in this process, for the UI process to reach on LLMBOX_API_PORT.
    with running_api(tmp_path / "api", hub.url, served=True) as api:
        settings = api.settings.model_copy(update={"state_dir": tmp_path / "ui", "ui_port": free_port()})
        try:
            url = start_ui(settings)
            login = httpx.get(f"{url}/login")
            assert login.status_code == 200 and "llmbox_ui" in login.headers["set-cookie"]
            assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Lax" in login.headers["set-cookie"]
            secret = settings.state_dir / "ui-secret"
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) == 64
            # it reaches the API configured by LLMBOX_API_PORT: a real login works
            # A browser's patience: the API's first serving call after its start waits for Ray's import.
            with httpx.Client(base_url=url, timeout=60) as browser:
                page = browser.get("/login").text
                token = page.split('name="csrf_token" value="')[1].split('"')[0]
                answer = browser.post("/login", data={"csrf_token": token, "token": api.admin})
                assert answer.status_code == 302 and answer.headers["location"] == "/"
                assert "alice · admin" in browser.get("/").text
            # waitress itself refuses a body over 1 MiB (its default would spool 1 GiB to disk), and a
            # name this box does not answer to.
            big = httpx.post(f"{url}/login", content=b"token=" + b"x" * (3 << 20),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=60)
            assert big.status_code == 413
            assert httpx.get(f"{url}/login", headers={"Host": "evil.example"}).status_code == 421
        finally:
            services.stop(settings, "ui")
