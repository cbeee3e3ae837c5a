"""Auth: every write needs an admin token; read tokens cannot write; beyond loopback all routes
need a token (test_process.py: and the API refuses to start there without one)."""

from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.tokens import TokenFile, hash_token
from app.devtools.sandbox import free_port
from app.settings import Settings

SAMPLE = {"model_id": "m0", "revision": "1", "download_id": "org--name--main", "org": "org", "name": "name"}


def write_routes(client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    routes = [(method.upper(), path.format(**SAMPLE)) for path, ops in spec["paths"].items()
              for method in ops if method.upper() not in ("GET", "HEAD")]
    assert len(routes) == 11  # models 3, restore, load, unload, reconcile, downloads 4: all covered
    return routes


def test_every_write_without_a_token_is_401_and_with_a_read_token_403(api):
    with api.client() as anonymous, api.client(api.reader) as reader, api.client("llmbox_forged") as forged:
        for method, path in write_routes(anonymous):
            response = anonymous.request(method, path, json={}, headers={"If-Match": '"0"'})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
            assert forged.request(method, path, json={}).status_code == 401
            denied = reader.request(method, path, json={})
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "read_only_token", (method, path)
        assert reader.get("/api/models").status_code == 200  # a read token reads


def test_tokens_are_stored_hashed(api):
    text = api.settings.admin_tokens_path.read_text()
    assert api.admin not in text and hash_token(api.admin) in text
    assert api.settings.admin_tokens_path.stat().st_mode & 0o777 == 0o600


def test_beyond_loopback_reads_need_a_token_too(tmp_path):
    settings = Settings(host="0.0.0.0", state_dir=tmp_path / "var", models_dir=tmp_path / "models",
                        registry_path=tmp_path / "models.yml", hf_endpoint=f"http://127.0.0.1:{free_port()}")  # no hub
    token = TokenFile(settings.admin_tokens_path).add("ops", "read")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        refused = client.get("/api/events")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_token"
        assert client.get("/api/events", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/api/health").status_code == 200  # liveness stays open
        assert client.get("/api/events", headers={"Authorization": "Basic abc"}).status_code == 401


def test_whoami_names_the_token_and_its_scope(api):
    with api.client(api.reader) as reader, api.client() as anonymous:
        assert reader.get("/api/whoami").json() == {"name": "viewer", "scope": "read"}
        assert anonymous.get("/api/whoami").status_code == 401


def test_the_docs_need_a_token_beyond_loopback(tmp_path):
    settings = Settings(host="0.0.0.0", state_dir=tmp_path / "var", models_dir=tmp_path / "models",
                        registry_path=tmp_path / "models.yml", hf_endpoint=f"http://127.0.0.1:{free_port()}")
    token = TokenFile(settings.admin_tokens_path).add("ops", "read")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, path


def test_the_docs_stay_open_on_loopback(api):
    with api.client() as anonymous:
        assert anonymous.get("/docs").status_code == 200 and "swagger" in anonymous.get("/docs").text.lower()
        assert "/api/models" in anonymous.get("/openapi.json").json()["paths"]


def test_a_rebinding_host_name_gets_421_on_every_route(api):
    with api.client(api.admin) as admin:
        for path in ("/api/models", "/api/health", "/openapi.json", "/api/events"):
            refused = admin.get(path, headers={"Host": "evil.example"})
            assert refused.status_code == 421 and refused.json()["error"]["code"] == "host_not_allowed", path
        assert admin.get("/api/models", headers={"Host": "localhost:8001"}).status_code == 200
