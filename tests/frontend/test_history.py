"""History: revisions with who changed what, diffs, restore."""

from tests.frontend.conftest import flashes, post


def test_history_diff_and_restore(admin, someone_else):
    base = someone_else.get("/api/registry").json()["revision"]
    changed = someone_else.patch("/api/models/m4", json={"idle_timeout_s": 4242}, headers={"If-Match": f'"{base}"'})
    assert changed.status_code == 200
    edited = base + 1

    page = admin.get("/history").get_data(as_text=True)
    assert f'Current revision <strong>{edited}</strong>' in page
    row = page.split(f'href="/history/{edited}">{edited}</a>')[1].split("</tr>")[0]
    assert "edit m4" in row and "alice" in row

    diff = admin.get(f"/history/{edited}").get_data(as_text=True)
    assert '<span class="add">+      idle_timeout_s: 4242</span>' in diff
    assert "edit m4 by alice" in diff

    old = admin.get(f"/history/{base}?against=current").get_data(as_text=True)
    assert "idle_timeout_s: 4242" in old and "Restore this revision" in old
    restored = post(admin, f"/history/{base}/restore", {"base_revision": edited}, follow_redirects=True)
    assert f"Restored revision {base}: saved as registry revision {edited + 1}" in flashes(restored)[0]
    assert someone_else.get("/api/models/m4").json()["idle_timeout_s"] is None

    stale = post(admin, f"/history/{base}/restore", {"base_revision": edited}, follow_redirects=True)
    assert f"Someone else changed the registry (now revision {edited + 1})" in flashes(stale)[0]

    missing = post(admin, "/history/99999/restore", {"base_revision": edited + 1}, follow_redirects=True)
    assert missing.status_code == 404 or "Not restored:" in " ".join(flashes(missing))
