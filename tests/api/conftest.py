"""The management API of one test over its own files: ``TestClient(create_app(settings))``, or served
over HTTP in this process where the client needs a URL (the fuzzer, the admin UI's tests).

The hub is the stand-in (tests/conftest.py) and no serving plane runs (nothing listens on the Ray port):
serving calls answer 503 ``serving_unavailable``, which is what the API must do when the serving plane
is down. test_process.py runs ``python -m app.api`` itself; tests/integration/test_management.py covers
the API driving a real serving plane.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.tokens import TokenFile
from app.devtools.sandbox import free_port
from app.registry.store import RegistryStore
from app.settings import Settings
from tests.conftest import serving

REGISTRY = """llmbox_registry:
  revision: 0
  # a comment a person wrote: API edits keep it
  defaults: {idle_timeout_s: 600}
  models:
""" + "".join(f"    - id: m{i}\n      source: /srv/models/m{i}\n      serve: true\n" for i in range(8))


class Caller:
    """Requests through ``http`` as the holder of ``token`` (None: anonymous)."""

    def __init__(self, http: TestClient | httpx.Client, token: str | None) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, url: str, *, headers: dict | None = None, **kwargs):
        return self.http.request(method, url, headers={**self.headers, **(headers or {})}, **kwargs)

    def get(self, url: str, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs):
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs):
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs):
        return self.request("DELETE", url, **kwargs)


@dataclass
class Api:
    """A running API: its settings (files under ``base``), two tokens (alice: admin, viewer: read), and
    ``http``, the one client every request goes through (a TestClient, or httpx to a served app)."""

    base: Path
    settings: Settings
    admin: str
    reader: str
    http: TestClient | httpx.Client

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    @contextmanager
    def client(self, token: str | None = None) -> Iterator[Caller]:
        yield Caller(self.http, token)


@contextmanager
def running_api(base: Path, hub_url: str, *, overrides: dict | None = None, served: bool = False,
                **settings) -> Iterator[Api]:
    """The API over ``base`` with the test registry and two tokens, its lifespan running.

    In a TestClient, or ``served`` over real HTTP on its ``api_port`` (for clients that need a URL: the
    fuzzer, the admin UI); ``overrides`` are dependency_overrides (a fake NVML); ``settings`` set Settings fields.
    """
    settings.setdefault("model_roots", [Path("/srv/models")])  # where the test registry's local models are
    config = Settings(state_dir=base / "var", models_dir=base / "models",
                      registry_path=base / "inventory" / "models.yml", api_port=free_port(), ray_port=free_port(),
                      hf_endpoint=hub_url, download_min_free_gb=0, **settings)
    RegistryStore(config.registry_path).create(REGISTRY)
    tokens = TokenFile(config.admin_tokens_path)
    admin, reader = tokens.add("alice"), tokens.add("viewer", "read")
    app = create_app(config)
    app.dependency_overrides.update(overrides or {})
    if served:
        with serving(app, config.api_port) as url, httpx.Client(base_url=url, timeout=30) as http:
            yield Api(base, config, admin, reader, http)
    else:
        with TestClient(app, base_url="http://127.0.0.1") as http:
            yield Api(base, config, admin, reader, http)


@pytest.fixture
def hub(hub):
    """The hub stand-in with the tiny chat model as acme/tiny-chat."""
    hub.add_tiny_model("acme/tiny-chat", downloads=50)
    return hub


@pytest.fixture
def api(tmp_path, hub):
    with running_api(tmp_path, hub.url) as running:
        yield running
