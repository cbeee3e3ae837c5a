"""A real management API process (``python -m app.api``) on a free port, over its own files.

No Ray head runs here: serving calls answer 503 ``serving_unavailable``, which is what the API
must do when the serving plane is down. tests/integration/test_management.py covers the API
driving a real serving plane.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.api.tokens import TokenFile
from app.devtools.hub_standin import HubStandin
from app.devtools.sandbox import free_port
from app.registry.store import RegistryStore
from tests.conftest import ROOT

REGISTRY = """llmbox_registry:
  revision: 0
  # a comment a person wrote: API edits keep it
  defaults: {idle_timeout_s: 600}
  models:
""" + "".join(f"    - id: m{i}\n      source: /srv/models/m{i}\n      serve: true\n" for i in range(8))


@dataclass
class Api:
    url: str
    admin: str
    reader: str
    env: dict
    base: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def api_env(base: Path, **extra) -> dict:
    return {**os.environ, "LLMBOX_STATE_DIR": str(base / "var"), "LLMBOX_MODELS_DIR": str(base / "models"),
            "LLMBOX_REGISTRY_PATH": str(base / "inventory" / "models.yml"), "LLMBOX_API_PORT": str(free_port()),
            "LLMBOX_RAY_PORT": str(free_port()), "LLMBOX_DOWNLOAD_MIN_FREE_GB": "0",
            # The real hub is unreachable here: a closed local port fails fast instead of timing out.
            "LLMBOX_HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", **extra}


def run_api(env: dict, base: Path):
    log = open(base / "api.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "app.api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['LLMBOX_API_PORT']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (base / "api.log").read_text()
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the API did not start")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The hub stand-in (a local HTTP server speaking the hub's API) with a tiny model."""
    standin = HubStandin(root=tmp_path_factory.mktemp("hub"))
    standin.add_tiny_model("acme/tiny-chat", downloads=50)
    with standin.serve() as url:
        standin.url = url
        yield standin


@contextmanager
def api_process(base: Path, **env_vars) -> Iterator[Api]:
    """A running API over ``base`` with the test registry and two tokens (alice: admin, viewer: read)."""
    env = api_env(base, **env_vars)
    RegistryStore(Path(env["LLMBOX_REGISTRY_PATH"])).create(REGISTRY)
    tokens = TokenFile(base / "var" / "admin-tokens")
    admin, reader = tokens.add("alice"), tokens.add("viewer", "read")
    proc, url = run_api(env, base)
    try:
        yield Api(url, admin, reader, env, base)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def api(tmp_path_factory, hub):
    with api_process(tmp_path_factory.mktemp("api"), LLMBOX_HF_ENDPOINT=hub.url) as running_api:
        yield running_api
