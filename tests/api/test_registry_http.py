"""Registry over HTTP: ETag / If-Match, conflicts, concurrent writers, history, diff and restore."""

import threading

from app.events import EventLog
from app.registry.store import RegistryStore


def revision(client) -> int:
    return int(client.get("/api/registry").headers["etag"].strip('"'))


def test_every_write_needs_if_match_and_a_stale_one_changes_nothing(api):
    with api.client(api.admin) as c:
        current = revision(c)
        missing = c.patch("/api/models/m0", json={"idle_timeout_s": 5})
        assert missing.status_code == 428 and missing.json()["error"]["code"] == "if_match_required"
        stale = c.patch("/api/models/m0", json={"idle_timeout_s": 5}, headers={"If-Match": f'"{current - 1}"'}
                        if current else {"If-Match": '"999"'})
        assert stale.status_code == 409
        assert stale.json()["error"]["current_revision"] == current and stale.headers["etag"] == f'"{current}"'
        assert revision(c) == current and c.get("/api/models/m0").json()["idle_timeout_s"] is None


def test_eight_clients_fifty_edits_each_lose_nothing(api):
    with api.client(api.admin) as c:
        start = revision(c)
    accepted, conflicts, errors = [0] * 8, [0] * 8, []

    def client(i: int) -> None:
        with api.client(api.admin) as c:
            for n in range(1, 51):
                while True:
                    base = c.get(f"/api/models/m{i}").headers["etag"]
                    r = c.patch(f"/api/models/m{i}", json={"idle_timeout_s": n}, headers={"If-Match": base})
                    if r.status_code == 409:
                        conflicts[i] += 1
                        continue
                    if r.status_code != 200:
                        errors.append(r.text)
                        return
                    accepted[i] += 1
                    break

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(accepted) == 400 and sum(conflicts) > 0  # writers really raced
    with api.client() as c:
        body = c.get("/api/models").json()
        assert body["revision"] == start + 400
        assert {m["id"]: m["idle_timeout_s"] for m in body["models"]} == {f"m{i}": 50 for i in range(8)}
        kept = [r["revision"] for r in c.get("/api/registry/history").json()["revisions"]]
        assert set(range(start, start + 401)) <= set(kept)
        assert "# a comment a person wrote" in c.get("/api/registry").json()["yaml"]


def test_add_toggle_delete_with_etags_and_events_naming_who(api):
    with api.client(api.admin) as c:
        base = revision(c)
        entry = {"id": "extra", "source": "/srv/models/extra", "serve": False, "idle_timeout_s": 30}
        added = c.post("/api/models", json=entry, headers={"If-Match": f'"{base}"'})
        assert added.status_code == 201, added.text
        assert added.headers["etag"] == f'"{base + 1}"' and added.json()["revision"] == base + 1
        assert added.json()["applied"]["ok"] is False  # no serving plane here: the edit still stands
        again = c.post("/api/models", json=entry, headers={"If-Match": f'"{base + 1}"'})
        assert again.status_code == 409 and again.json()["error"]["code"] == "model_exists"
        toggled = c.patch("/api/models/extra", json={"serve": True, "always_on": True},
                          headers={"If-Match": f'"{base + 1}"'})
        assert toggled.status_code == 200 and toggled.json()["model"]["always_on"] is True
        shown = c.get("/api/models/extra").json()
        assert shown["serve"] and shown["state"] == "unknown"  # state unknown: serving plane down
        assert c.delete("/api/models/extra", headers={"If-Match": f'"{base + 2}"'}).status_code == 200
        assert c.get("/api/models/extra").status_code == 404
    events = EventLog(api.settings.state_dir / "events.jsonl").read(3, kind="registry_edited")
    assert [(e["action"], e["who"], e["revision"]) for e in events] == [
        ("delete", "alice", base + 3), ("edit", "alice", base + 2), ("add", "alice", base + 1)]
    with api.client() as c:
        listed = c.get("/api/events", params={"kind": "registry_edited", "limit": 3}).json()["events"]
        assert [e["revision"] for e in listed] == [base + 3, base + 2, base + 1]


def test_history_diff_and_restore(api):
    with api.client(api.admin) as c:
        base = revision(c)
        c.patch("/api/models/m7", json={"memory_gb": 7.5}, headers={"If-Match": f'"{base}"'}).raise_for_status()
        diff = c.get(f"/api/registry/history/{base}/diff").json()
        assert diff["from"] == base and diff["to"] == base + 1
        assert "+      memory_gb: 7.5" in diff["diff"] and f"+  revision: {base + 1}" in diff["diff"]
        restored = c.post(f"/api/registry/history/{base}/restore", headers={"If-Match": f'"{base + 1}"'})
        assert restored.status_code == 200 and restored.json()["revision"] == base + 2
        assert c.get("/api/models/m7").json()["memory_gb"] is None
        assert c.get("/api/registry/history/999999").status_code == 404
    registry = RegistryStore(api.settings.registry_path).read()
    assert registry.revision == base + 2 and registry.get("m7").memory_gb is None


def test_invalid_edits_are_refused_with_the_field_named(api):
    with api.client(api.admin) as c:
        base = revision(c)
        bad = c.patch("/api/models/m1", json={"always_on": True, "serve": False}, headers={"If-Match": f'"{base}"'})
        assert bad.status_code == 400 and "always_on needs serve: true" in bad.json()["error"]["message"]
        typo = c.patch("/api/models/m1", json={"serv": True}, headers={"If-Match": f'"{base}"'})
        assert typo.status_code == 400 and "serv" in typo.json()["error"]["message"]
        assert revision(c) == base


def test_a_package_source_this_install_lacks_is_refused_before_it_is_saved(api):
    # Saved, it would stop the box at its next start (app.box.check_registry): refuse it here.
    with api.client(api.admin) as c:
        base = revision(c)
        headers = {"If-Match": f'"{base}"'}
        added = c.post("/api/models", json={"id": "gone", "source": "package:llmbox_no_such_package/model",
                                            "task": "embed"}, headers=headers)
        assert added.status_code == 400
        error = added.json()["error"]
        assert error["code"] == "source_not_installed"
        assert "Python package 'llmbox_no_such_package' is not installed" in error["message"]
        moved = c.patch("/api/models/m1", json={"source": "package:llmbox_no_such_package/model"}, headers=headers)
        assert moved.status_code == 400 and moved.json()["error"]["code"] == "source_not_installed"
        assert revision(c) == base
        engine_env = c.patch("/api/models/m1", json={"engine": {"env": {"LD_PRELOAD": "/tmp/x.so"}}}, headers=headers)
        assert engine_env.status_code == 400 and "'LD_PRELOAD' is not allowed" in engine_env.json()["error"]["message"]
        assert revision(c) == base
