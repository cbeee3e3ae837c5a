"""Models: add, edit, toggle, delete through the UI; conflicts never lose an edit."""

import re

from tests.frontend.conftest import flashes, post

CONFLICT = re.compile(r"Someone else changed the registry \(now revision (\d+)\)\. Reload to see their change; "
                      r"your edit was not applied\.")


def revision(http) -> int:
    return http.get("/api/registry").json()["revision"]


def form_for(model_id: str, base: int, **overrides) -> dict:
    values = {"id": model_id, "source": f"/srv/models/{model_id}", "task": "generate", "serve": "on",
              "idle_timeout_s": "", "memory_gb": "", "revision_ref": "", "engine_dtype": "auto",
              "engine_max_model_len": "", "engine_tensor_parallel_size": "1", "engine_gpu_memory_utilization": "",
              "engine_extra_args": "{}", "base_revision": str(base)}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def test_add_edit_toggle_delete(admin, someone_else):
    base = revision(someone_else)
    page = admin.get("/models/new").get_data(as_text=True)
    assert f'name="base_revision" value="{base}"' in page

    added = post(admin, "/models/new", form_for("ui-added", base, idle_timeout_s="120"), follow_redirects=True)
    assert f"ui-added: saved as registry revision {base + 1}; not applied yet" in flashes(added)[0]
    assert f"Registry revision <strong>{base + 1}</strong>" in added.get_data(as_text=True)
    model = someone_else.get("/api/models/ui-added").json()
    assert model["serve"] is True and model["idle_timeout_s"] == 120

    edit = admin.get("/models/ui-added/edit").get_data(as_text=True)
    assert 'name="idle_timeout_s" value="120"' in edit and f'value="{base + 1}"' in edit
    engine = {"engine_dtype": "float32", "engine_max_model_len": "512", "engine_enforce_eager": "on",
              "engine_extra_args": '{"seed": 3}', "engine_env": '{"NCCL_P2P_DISABLE": "1"}',
              "idle_timeout_s": "0", "memory_gb": "2.5", "nodes": "gpu-b, gpu-c"}
    edited = post(admin, "/models/ui-added/edit", form_for("ui-added", base + 1, **engine), follow_redirects=True)
    assert f"saved as registry revision {base + 2}" in flashes(edited)[0]
    model = someone_else.get("/api/models/ui-added").json()
    assert model["engine"] == {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 512, "dtype": "float32",
                               "gpu_memory_utilization": None, "kv_cache_memory_bytes": None,
                               "concurrent_sequences": None, "enforce_eager": True, "extra_args": {"seed": 3},
                               "env": {"NCCL_P2P_DISABLE": "1"}}
    assert model["idle_timeout_s"] == 0 and model["memory_gb"] == 2.5 and model["nodes"] == ["gpu-b", "gpu-c"]
    assert 'name="nodes" value="gpu-b, gpu-c"' in admin.get("/models/ui-added/edit").get_data(as_text=True)

    # Only what changed is sent: clearing a field resets it, an unchanged form changes nothing.
    cleared = post(admin, "/models/ui-added/edit", form_for("ui-added", base + 2, **{**engine, "memory_gb": "",
                                                                                     "engine_extra_args": "{}"}))
    assert cleared.status_code == 302
    model = someone_else.get("/api/models/ui-added").json()
    assert model["memory_gb"] is None and model["engine"]["extra_args"] == {}
    same = post(admin, "/models/ui-added/edit", form_for("ui-added", base + 3, **{**engine, "memory_gb": "",
                                                                                  "engine_extra_args": "{}"}),
                follow_redirects=True)
    assert flashes(same) == ["ui-added: nothing changed."] and revision(someone_else) == base + 3

    toggled = post(admin, "/models/ui-added/toggle", {"field": "serve", "value": "off", "base_revision": base + 3},
                   follow_redirects=True)
    assert "ui-added: serve off: saved as registry revision" in flashes(toggled)[0]
    assert someone_else.get("/api/models/ui-added").json()["serve"] is False

    deleted = post(admin, "/models/ui-added/delete", {"base_revision": base + 4}, follow_redirects=True)
    assert "ui-added: removed: saved as registry revision" in flashes(deleted)[0]
    assert someone_else.get("/api/models/ui-added").status_code == 404


def test_an_edit_on_a_stale_revision_shows_the_conflict_and_keeps_the_input(admin, someone_else):
    base = revision(someone_else)
    admin.get("/models/m2/edit")  # the person opens the form at `base` ...
    theirs = someone_else.patch("/api/models/m2", json={"idle_timeout_s": 77}, headers={"If-Match": f'"{base}"'})
    assert theirs.status_code == 200  # ... someone else saves first ...
    response = post(admin, "/models/m2/edit", form_for("m2", base, source="/srv/models/m2", idle_timeout_s="999"))
    html = response.get_data(as_text=True)
    assert response.status_code == 409
    match = CONFLICT.search(html)
    assert match and int(match.group(1)) == base + 1
    assert 'href="/models/m2/edit">Reload</a>' in html
    assert 'name="idle_timeout_s" value="999"' in html  # what the person typed is still there
    assert someone_else.get("/api/models/m2").json()["idle_timeout_s"] == 77  # and nothing was overwritten


def test_a_toggle_on_a_stale_revision_is_refused_with_the_conflict_message(admin, someone_else):
    stale = revision(someone_else)
    theirs = someone_else.patch("/api/models/m4", json={"idle_timeout_s": 44}, headers={"If-Match": f'"{stale}"'})
    assert theirs.status_code == 200  # someone else saved after the page showed `stale`
    response = post(admin, "/models/m3/toggle", {"field": "always_on", "value": "on", "base_revision": stale},
                    follow_redirects=True)
    message = flashes(response)[0]
    assert CONFLICT.search(message) and "m3: always-on on" in message and "Reload" in message
    assert someone_else.get("/api/models/m3").json()["always_on"] is False


def test_invalid_input_is_explained_and_kept(admin, someone_else):
    base = revision(someone_else)
    bad_number = post(admin, "/models/new", form_for("ui-bad", base, idle_timeout_s="soon", engine_extra_args="[1]"))
    assert bad_number.status_code == 400
    assert flashes(bad_number) == ["idle_timeout_s: 'soon' is not a whole number",
                                   'engine.extra_args: write a JSON object, e.g. {"max_num_seqs": 8}']
    assert 'value="soon"' in bad_number.get_data(as_text=True)

    bad_source = post(admin, "/models/new", form_for("ui-bad", base, source="not a source"))
    assert bad_source.status_code == 400
    assert "Not saved:" in flashes(bad_source)[0] and "not a source" in flashes(bad_source)[0]
    assert 'value="not a source"' in bad_source.get_data(as_text=True)

    exists = post(admin, "/models/new", form_for("m0", base))
    assert exists.status_code == 409 and flashes(exists) == ["Not saved: model 'm0' is already in the registry"]
    assert revision(someone_else) == base
