"""Fixtures for the hub package: the hub stand-in (tests/conftest.py), reached through the real client."""

import pytest
from huggingface_hub import HfApi

from app.hub.downloads import DownloadManager
from app.hub.fit import HostMemory


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.url, token=False)


@pytest.fixture
def gpu24():
    return HostMemory.gpus([("NVIDIA L4-ish", 24.0, 24.0)])


@pytest.fixture
def managers(tmp_path, hub):
    """Make DownloadManagers on this test's folders; all are shut down at the end."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("min_free_bytes", 0)
        kwargs.setdefault("endpoint", hub.url)
        manager = DownloadManager(tmp_path / "models", tmp_path / "state", **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()
