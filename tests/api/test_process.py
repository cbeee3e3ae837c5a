"""``python -m app.api`` as ./start.sh runs it (app.services): the one test of the API as a process.
Every other test in this folder runs the app in process."""

import httpx
import pytest

from app import services
from app.api.tokens import TokenFile
from app.devtools.sandbox import env, free_port
from app.registry.store import RegistryStore
from app.settings import Settings
from tests.api.conftest import REGISTRY


def test_it_refuses_to_listen_beyond_loopback_without_a_token_then_serves_on_loopback(tmp_path):
    settings = Settings(state_dir=tmp_path / "var", models_dir=tmp_path / "models",
                        registry_path=tmp_path / "models.yml", api_port=free_port(), ray_port=free_port(),
                        hf_endpoint=f"http://127.0.0.1:{free_port()}")  # no hub: a closed port
    RegistryStore(settings.registry_path).create(REGISTRY)
    url = services.local_url(settings, settings.api_port)
    log = settings.state_dir / "logs" / "api.log"

    exposed = settings.model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(RuntimeError, match="^api exited with 2") as refused:
        services.start(exposed, "api", "app.api", f"{url}/api/health", env=env(exposed))
    assert "LLMBOX_HOST=0.0.0.0 is reachable beyond this machine but no management API token" in str(refused.value)
    assert "Traceback" not in log.read_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/api/health", timeout=1)

    admin = TokenFile(settings.admin_tokens_path).add("alice")
    try:
        assert services.start(settings, "api", "app.api", f"{url}/api/health", env=env(settings))
        assert httpx.get(f"{url}/api/health").json() == {"status": "ok"}
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as alice:
            assert alice.get("/api/whoami").json() == {"name": "alice", "scope": "admin"}
            edit = alice.patch("/api/models/m0", json={"idle_timeout_s": 5}, headers={"If-Match": '"0"'})
            assert edit.status_code == 200 and edit.headers["etag"] == '"1"'
    finally:
        stopped = services.stop(settings, "api")
    assert stopped is not None and services.pid(settings, "api") is None
    text = log.read_text()
    assert '"PATCH /api/models/m0 HTTP/1.1" 200' in text  # the access log names each request ...
    assert admin not in text  # ... but never its token
