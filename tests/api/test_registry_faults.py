"""Registry writes that must take effect whoever makes them, and edits the API must refuse before saving.

In-process apps (TestClient), the hub stand-in for the hub, and no serving plane (a stub answers 503).
"""

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.deps import get_serving
from app.api.errors import ApiError
from app.api.tokens import TokenFile
from app.devtools.hub_standin import HubStandin
from app.devtools.sandbox import free_port, wait_for
from app.registry.edits import update_model
from app.registry.store import RegistryStore
from app.settings import Settings

REGISTRY = """llmbox_registry:
  revision: 0
  models:
    - id: local
      source: /srv/models/local
      serve: true
    - id: chat
      source: acme/tiny-chat
      serve: {serve}
"""


class NoServing:
    """The serving plane is down: writes stand and are applied at its next start."""

    async def call(self, method, *args, **kwargs):
        raise ApiError(503, "serving_unavailable", "the serving plane is not running")

    async def status_or_none(self):
        return None


@contextmanager
def api(tmp_path: Path, hf_endpoint: str, serve: bool = False):
    """An in-process API over its own registry; yields (client, admin headers for a write at revision 0, store)."""
    settings = Settings(state_dir=tmp_path / "var", models_dir=tmp_path / "models",
                        registry_path=tmp_path / "models.yml", hf_endpoint=hf_endpoint, download_min_free_gb=0)
    store = RegistryStore(settings.registry_path)
    store.create(REGISTRY.format(serve="true" if serve else "false"))
    admin = TokenFile(settings.admin_tokens_path).add("alice")
    app = create_app(settings)
    app.dependency_overrides[get_serving] = NoServing
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, {"Authorization": f"Bearer {admin}", "If-Match": '"0"'}, store


def test_a_revision_the_hub_paths_refuse_is_a_400_and_nothing_is_saved(tmp_path):
    # A closed port: the served HF model's download fails at once, as on a box without network.
    with api(tmp_path, f"http://127.0.0.1:{free_port()}", serve=True) as (client, admin, store):
        response = client.patch("/api/models/chat", json={"revision": "refs/pr/1"}, headers=admin)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_registry" and error["type"] == "invalid_request_error"
        assert "models[1].revision" in error["message"] and "'refs/pr/1'" in error["message"]
        assert store.read().revision == 0 and store.read().get("chat").revision is None


def ansible_push(store):  # the sync module writes through the store: a new revision
    store.edit(0, lambda body: update_model(body, "chat", {"serve": True}))


def hand_edit(store):  # an editor rewrites the file, and the person forgets to bump the revision
    store.path.write_text(store.path.read_text().replace("serve: false", "serve: true"))


@pytest.mark.parametrize("write", [ansible_push, hand_edit])
def test_a_registry_written_behind_the_apis_back_starts_its_downloads(tmp_path, hub, write):
    with api(tmp_path, hub.url) as (client, _, store):
        assert client.get("/api/downloads").json()["downloads"] == []
        write(store)
        repos = lambda: [d["repo_id"] for d in client.get("/api/downloads").json()["downloads"]]  # noqa: E731
        assert wait_for(repos, 5, "a download of the newly served model", every_s=0.2) == ["acme/tiny-chat"]


def test_the_api_answers_while_a_write_waits_on_a_slow_hub(tmp_path):
    hub = HubStandin(root=tmp_path / "hub")
    hub.add_tiny_model("acme/tiny-chat")
    hub.info_delay_s = 3.0  # every model_info (what a download plans from) takes this long
    with hub.serve() as url, api(tmp_path, url) as (client, admin, _):
        reply = {}
        write = threading.Thread(target=lambda: reply.update(
            client.patch("/api/models/chat", json={"serve": True}, headers=admin).json()))
        write.start()
        wait_for(lambda: hub.requests["info"], 10, "the write's download asking the hub", every_s=0.05)
        began = time.monotonic()
        assert client.get("/api/health").status_code == 200
        assert time.monotonic() - began < 1.0  # not held up by the hub call in flight
        write.join(30)
        assert [d["repo_id"] for d in reply["downloads"]] == ["acme/tiny-chat"]  # the reply still lists it
