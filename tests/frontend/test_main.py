"""``python -m frontend``: serves on loopback with a generated secret; refuses to be exposed
without a token, like the management API."""

import os
import stat
import subprocess
import sys
import time

import httpx

from app.devtools.sandbox import free_port
from tests.conftest import ROOT


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    env = {**os.environ, "LLMBOX_HOST": "0.0.0.0", "LLMBOX_STATE_DIR": str(tmp_path), "LLMBOX_UI_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "frontend"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "[llmbox-ui] refusing to start: LLMBOX_HOST=0.0.0.0 is reachable beyond this machine" in done.stderr


def test_serves_on_loopback(tmp_path, api):
    port = free_port()
    env = {**api.env, "LLMBOX_STATE_DIR": str(tmp_path), "LLMBOX_UI_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "frontend"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the UI did not start"
                time.sleep(0.2)
        login = httpx.get(f"http://127.0.0.1:{port}/login")
        assert login.status_code == 200 and "llmbox_ui" in login.headers["set-cookie"]
        assert "HttpOnly" in login.headers["set-cookie"] and "SameSite=Lax" in login.headers["set-cookie"]
        secret = tmp_path / "ui-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) == 64
        # it reaches the API configured by LLMBOX_API_PORT: a real login works
        # A browser's patience: the API's first serving call after its start waits for Ray's import.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as browser:
            page = browser.get("/login").text
            token = page.split('name="csrf_token" value="')[1].split('"')[0]
            answer = browser.post("/login", data={"csrf_token": token, "token": api.admin})
            assert answer.status_code == 302 and answer.headers["location"] == "/"
            assert "alice · admin" in browser.get("/").text
    finally:
        proc.terminate()
        proc.wait(30)
