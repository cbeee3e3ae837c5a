"""Bad input: a fuzzed OpenAPI schema never crashes the API; path tricks and huge bodies are refused."""

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from app.web.limits import BodyLimit
from app.registry.store import RegistryStore
from tests.api.conftest import running_api

# 503 is right for routes whose dependency is down here (no serving plane, no hub): it must name it.
DEPENDENCY_DOWN = {"serving_unavailable", "hub_unavailable"}


@pytest.fixture
def served(tmp_path, hub):
    """The API served over HTTP (uvicorn, in this process): schemathesis calls it as any client would."""
    with running_api(tmp_path, hub.url, served=True) as api:
        yield api


def test_fuzzed_requests_get_clear_answers_never_a_crash(served):
    """Every operation of the OpenAPI schema, with generated valid and invalid inputs, as an admin."""
    # The pytest plugin of schemathesis (from_fixture) does not run on pytest 9: drive hypothesis here.
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    seen: dict[str, set[int]] = {}

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {served.admin}"}, timeout=30)
            seen.setdefault(operation.label, set()).add(response.status_code)
            assert response.status_code != 500, f"{case.method} {case.formatted_path}: {response.text}"
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["code"] and error["type"]
            if response.status_code >= 500:
                assert response.json()["error"]["code"] in DEPENDENCY_DOWN, response.text

        check()
    assert len(seen) == len(operations)  # every operation was really called


# The id guard (400 invalid_model_id) refuses what reaches it; an id with a "/" in it matches no route
# (404 not_found, not a handler's model_not_found). A literal ".." is resolved by the client before it is
# sent, so "%2E%2E" is how a ".." reaches the server.
@pytest.mark.parametrize("path, status, code", [
    ("/api/models/%2E%2E", 400, "invalid_model_id"), ("/api/models/a..b", 400, "invalid_model_id"),
    ("/api/models/a%00b", 400, "invalid_model_id"), ("/api/models/.hidden", 400, "invalid_model_id"),
    ("/api/models/" + "x" * 65, 400, "invalid_model_id"), ("/api/models/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
])
def test_path_tricks_in_model_ids_are_refused(api, path, status, code):
    with api.client(api.admin) as c:
        for response in (c.get(path), c.patch(path, json={"serve": True}, headers={"If-Match": '"0"'}),
                         c.post(path + "/load")):
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), \
                (path, response.request.method, response.text)
    assert RegistryStore(api.settings.registry_path).read().revision == 0  # nothing was written


@pytest.mark.parametrize("repo, revision", [("../../etc", "main"), ("org/name", "../../x"), ("org/..", "main"),
                                            ("org/name", "a/b"), ("/abs/path", "main")])
def test_path_tricks_in_download_targets_are_refused(api, repo, revision):
    with api.client(api.admin) as c:
        response = c.post("/api/downloads", json={"repo_id": repo, "revision": revision})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_repo", response.text
        assert c.get("/api/downloads").json()["downloads"] == []  # nothing was started
    assert not (api.base / "etc").exists() and not list(api.base.parent.rglob("x"))


def test_oversize_bodies_are_refused_before_they_are_read(api):
    with api.client(api.admin) as c:
        big = c.post("/api/models", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                     headers={"If-Match": '"0"', "Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        chunked = c.post("/api/models", content=iter([b" " * 65536] * 40),
                         headers={"If-Match": '"0"', "Content-Type": "application/json"})
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    assert RegistryStore(api.settings.registry_path).read().revision == 0  # still readable, nothing written


def test_a_body_without_a_length_is_read_only_up_to_the_limit():
    """The chunked case at the ASGI level, where "before it is read" shows: how many chunks were taken."""
    chunk, taken, sent = b" " * 65536, [], []

    async def receive():
        taken.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(taken) < 40}

    async def send(message):
        sent.append(message)

    async def handler(scope, receive, send):
        raise AssertionError("the handler must never see an oversize body")

    asyncio.run(BodyLimit(handler, max_bytes=1024 * 1024)({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 413 and b"body_too_large" in sent[1]["body"]
    assert len(taken) == 17  # 17 x 64 KiB is the first read over 1 MiB: the other 23 chunks were never read
