"""Model writes the host refuses (app/engines/host_rules.py) and engine arguments off the allow-list: a 400
in the API's error shape, nothing written. The test registry's local models are under /srv/models, a
LLMBOX_MODEL_ROOTS folder of these tests (tests/api/conftest.py)."""

import pytest

from tests.api.conftest import running_api


def revision(client) -> int:
    return int(client.get("/api/registry").headers["etag"].strip('"'))


def refused(response, code: str, *words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and "param" in error
    assert all(w in error["message"] for w in words), error["message"]


REMOTE = {"engine": {"extra_args": {"trust_remote_code": True}}}


def test_remote_code_is_refused_without_the_host_setting(api):
    with api.client(api.admin) as c:
        base = revision(c)
        headers = {"If-Match": f'"{base}"'}
        added = c.post("/api/models", json={"id": "remote", "source": "org/remote", **REMOTE}, headers=headers)
        refused(added, "not_allowed_on_host", "trust_remote_code", "LLMBOX_ALLOW_REMOTE_CODE")
        edited = c.patch("/api/models/m1", json=REMOTE, headers=headers)
        refused(edited, "not_allowed_on_host", "LLMBOX_ALLOW_REMOTE_CODE")
        assert revision(c) == base and c.get("/api/models/m1").json()["engine"]["extra_args"] == {}


def test_remote_code_is_accepted_where_the_host_allows_it(tmp_path, hub):
    with running_api(tmp_path, hub.url, allow_remote_code=True) as api, api.client(api.admin) as c:
        assert api.settings.allow_remote_code is True  # LLMBOX_ALLOW_REMOTE_CODE
        base = revision(c)
        edited = c.patch("/api/models/m1", json=REMOTE, headers={"If-Match": f'"{base}"'})
        assert edited.status_code == 200, edited.text
        assert edited.json()["model"]["engine"]["extra_args"] == {"trust_remote_code": True}


@pytest.mark.parametrize("source", ["/", "/root/.ssh", "/proc/self", "/srv/models/../../etc/x", "/srv/modelsx/a"])
def test_an_absolute_source_outside_the_roots_is_refused(api, source):
    with api.client(api.admin) as c:
        base = revision(c)
        headers = {"If-Match": f'"{base}"'}
        added = c.post("/api/models", json={"id": "local", "source": source}, headers=headers)
        moved = c.patch("/api/models/m1", json={"source": source}, headers=headers)
        for response in (added, moved):
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] in ("not_allowed_on_host", "invalid_request", "invalid_registry")
            assert source in response.json()["error"]["message"] or "'..'" in response.json()["error"]["message"]
        assert revision(c) == base


def test_a_symlink_in_the_models_folder_that_points_outside_is_refused(api, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    api.settings.models_dir.mkdir(parents=True, exist_ok=True)
    link = api.settings.models_dir / "escape"
    link.symlink_to(outside)
    (api.settings.models_dir / "weights").mkdir()
    with api.client(api.admin) as c:
        base = revision(c)
        escape = c.post("/api/models", json={"id": "escape", "source": str(link)}, headers={"If-Match": f'"{base}"'})
        refused(escape, "not_allowed_on_host", str(link), f"resolves to {outside}", "LLMBOX_MODEL_ROOTS")
        inside = c.post("/api/models", json={"id": "inside", "source": str(api.settings.models_dir / "weights")},
                        headers={"If-Match": f'"{base}"'})
        assert inside.status_code == 201, inside.text
        rooted = c.post("/api/models", json={"id": "rooted", "source": "/srv/models/llama"},
                        headers={"If-Match": f'"{base + 1}"'})
        assert rooted.status_code == 201, rooted.text


@pytest.mark.parametrize("name", ["worker_extension_cls", "logits_processors", "allowed_local_media_path",
                                  "otlp_traces_endpoint"])
def test_an_engine_argument_off_the_allow_list_is_a_400_naming_it(api, name):
    with api.client(api.admin) as c:
        base = revision(c)
        headers = {"If-Match": f'"{base}"'}
        args = {"engine": {"extra_args": {name: "/"}}}
        refused(c.post("/api/models", json={"id": "x", "source": "org/x", **args}, headers=headers),
                "invalid_request", f"'{name}' is not on the allow-list")
        refused(c.patch("/api/models/m1", json=args, headers=headers), "invalid_registry",
                f"'{name}' is not on the allow-list")
        assert revision(c) == base


def test_an_entry_written_before_the_host_refused_it_can_still_be_turned_off(tmp_path, hub):
    # The test registry's /srv/models sources, on a host without that root: edits of other fields pass
    # (serve: false stops its failed loads), a change of the source or the engine is checked.
    with running_api(tmp_path, hub.url, model_roots=[]) as api, api.client(api.admin) as c:
        base = revision(c)
        off = c.patch("/api/models/m1", json={"serve": False}, headers={"If-Match": f'"{base}"'})
        assert off.status_code == 200, off.text
        refused(c.patch("/api/models/m1", json={"source": "/srv/models/m9"}, headers={"If-Match": f'"{base + 1}"'}),
                "not_allowed_on_host", "LLMBOX_MODEL_ROOTS")
