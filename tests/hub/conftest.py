"""Fixtures for the hub package: a hub stand-in on a free port, reached through the real client."""

import time

import pytest
from huggingface_hub import HfApi

from app.devtools.hub_standin import HubStandin
from app.hub.downloads import DownloadManager
from app.hub.fit import HostMemory

TOKEN = "hf_test_token_4f1c9e0b7d"


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch):
    # Only what a test passes explicitly may authenticate it.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory):
    """Shared by all stand-ins, so the tiny model is generated once per session."""
    return tmp_path_factory.mktemp("standin")


@pytest.fixture
def hub(standin_root):
    return HubStandin(standin_root, tokens={TOKEN})


@pytest.fixture
def hub_url(hub):
    with hub.serve() as url:
        yield url


@pytest.fixture
def api(hub_url):
    return HfApi(endpoint=hub_url, token=False)


@pytest.fixture
def gpu24():
    return HostMemory.gpus([("NVIDIA L4-ish", 24.0, 24.0)])


@pytest.fixture
def managers(tmp_path, hub_url):
    """Make DownloadManagers on this test's folders; all are shut down at the end."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("min_free_bytes", 0)
        kwargs.setdefault("endpoint", hub_url)
        manager = DownloadManager(tmp_path / "models", tmp_path / "state", **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    """Poll until predicate() is truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
