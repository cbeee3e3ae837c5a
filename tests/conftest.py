"""Shared fixtures: an isolated llmbox environment (own state dir, registry, ports) per test, the hub
stand-in, and an app served over real HTTP in this process."""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.devtools.hub_standin import HubStandin
from app.devtools.sandbox import env, free_port, wait_for
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HUB_TOKEN = "hf_test_token_4f1c9e0b7d"  # the one token the `hub` fixture's gated repos accept


@pytest.fixture
def box(monkeypatch):
    """Settings (also exported as LLMBOX_* variables) of a box whose files and ports are this test's alone."""
    # A short base path: Ray's Unix sockets live under the state dir.
    base = Path(os.environ.get("LLMBOX_TEST_TMP", "/tmp")) / f"lbx{os.getpid()}-{free_port()}"
    base.mkdir(parents=True)
    settings = Settings(state_dir=base / "var", models_dir=base / "models",
                        registry_path=base / "inventory" / "models.yml", ray_port=free_port(),
                        ray_dashboard_port=free_port(), serve_port=free_port(), api_port=free_port())
    for name, value in env(settings).items():
        if name.startswith("LLMBOX_"):
            monkeypatch.setenv(name, value)
    return settings


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory):
    """Where hub stand-ins generate the tiny model: shared, so it is generated once per session."""
    return tmp_path_factory.mktemp("hub")


@pytest.fixture
def hub(hub_root, monkeypatch):
    """This test's own hub stand-in (no repos yet; gated ones accept HUB_TOKEN), served at ``hub.url``.

    Packages publish what their tests need by extending it (``def hub(hub): hub.add_...``).
    """
    # Only what a test passes explicitly may authenticate it.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    standin = HubStandin(hub_root, tokens={HUB_TOKEN})
    with standin.serve() as url:
        standin.url = url
        yield standin


@contextmanager
def serving(app, port: int) -> Iterator[str]:
    """Serve an ASGI app (lifespan included) with uvicorn on 127.0.0.1:``port`` in a thread; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, f"the app to listen on port {port}", every_s=0.02)
    assert server.started, f"the app did not start on port {port} (its error is in the log above)"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
