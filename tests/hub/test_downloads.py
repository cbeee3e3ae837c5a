"""Downloads through the real client against the stand-in: progress, resume, restart, cancel, refusals."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

from app.devtools.sandbox import wait_for
from app.hub import paths
from app.hub.errors import BadRepoId, GatedRepo, NotEnoughDisk, RepoNotFound
from tests.conftest import HUB_TOKEN

WEIGHTS = "model.safetensors"


def publish(hub, repo_id, size, **kwargs):
    """A repo with random weights of ``size`` bytes (random, so a misplaced byte cannot go unnoticed)."""
    files = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": b'{"version": "1.0"}',
             WEIGHTS: os.urandom(size)}
    hub.add_repo(repo_id, files, **kwargs)
    return files


def finished(manager, download_id, timeout=30.0):
    return wait_for(lambda: (r := manager.get(download_id))["state"] not in ("queued", "running") and r,
                    timeout, f"download {download_id} to finish", every_s=0.05)


def assert_identical(hub, folder, repo_id):
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    expected = sorted(n for n in hub._repos[repo_id].files)
    assert names == expected  # nothing missing, no leftover .incomplete files
    for name in names:
        assert (folder / name).read_bytes() == hub.file_bytes(repo_id, name), name


def test_progress_rises_to_100_and_files_are_byte_identical(hub, managers, tmp_path):
    hub.add_tiny_model("llmbox-test/tiny-chat")  # the real tiny model: config, safetensors, tokenizer
    hub.throttle_bps = 1_500_000  # ~2.3 MB: about 1.5 s, long enough to watch
    events = []
    manager = managers(on_event=lambda kind, data: events.append((kind, data)))
    final = paths.local_dir(tmp_path / "models", "llmbox-test/tiny-chat")
    record = manager.start("llmbox-test/tiny-chat")
    assert record["state"] in ("queued", "running") and record["bytes_total"] > 2_000_000

    seen = []

    def done():
        current = manager.get(record["id"])
        if current["state"] == "running":
            assert not final.exists(), "the final folder appeared before the download was complete"
        seen.append(current)
        return current["state"] not in ("queued", "running")

    wait_for(done, 30, "the download to finish", every_s=0.1)
    percents = [r["percent"] for r in seen if r["state"] == "running"]
    assert any(0 < p < 100 for p in percents), percents
    assert percents == sorted(percents)
    assert any(r["rate_bps"] > 0 and r["eta_s"] is not None for r in seen)
    assert any(0 < f["done"] < f["size"] for r in seen for f in r["files"])  # per-file progress too

    result = seen[-1]
    assert result["state"] == "completed", result["error"]
    assert (result["percent"], result["bytes_done"]) == (100.0, result["bytes_total"])
    assert result["local_path"] == str(final)
    assert_identical(hub, final, "llmbox-test/tiny-chat")
    assert not paths.partial_dir(tmp_path / "models", "llmbox-test/tiny-chat").exists()
    wait_for(lambda: len(events) == 2, 5, "the completed event", every_s=0.05)  # delivered after the state
    assert [kind for kind, _ in events] == ["download_started", "download_completed"]
    assert events[-1][1]["bytes"] == result["bytes_total"]

    gets = hub.requests["get"]
    again = manager.start("llmbox-test/tiny-chat")  # already here: nothing is downloaded again
    assert again["state"] == "completed" and hub.requests["get"] == gets


def test_starting_a_running_download_returns_the_same_one(hub, managers):
    publish(hub, "acme/twice", 600_000)
    hub.throttle_bps = 600_000
    manager = managers()
    first, second = manager.start("acme/twice"), manager.start("acme/twice")
    assert first["id"] == second["id"] == "acme--twice--main"
    assert finished(manager, first["id"])["state"] == "completed"
    assert [r["id"] for r in manager.list()] == [first["id"]]
    assert hub.bytes_served("acme/twice", WEIGHTS) == 600_000  # transferred once


def test_dropped_connection_continues_from_where_it_stopped(hub, managers, tmp_path):
    size = 1_500_000
    publish(hub, "acme/flaky", size)
    hub.drop_connection("acme/flaky", WEIGHTS, after_bytes=700_000)
    manager = managers()
    result = finished(manager, manager.start("acme/flaky")["id"])
    assert result["state"] == "completed", result["error"]
    (start,) = hub.range_starts("acme/flaky", WEIGHTS)
    assert 0 < start <= 700_000
    # Only what had not reached the disk was sent again, not the file from zero.
    assert hub.bytes_served("acme/flaky", WEIGHTS) == 700_000 + size - start
    assert_identical(hub, paths.local_dir(tmp_path / "models", "acme/flaky"), "acme/flaky")


def test_failed_download_keeps_its_bytes_and_resumes_with_range(hub, managers, tmp_path):
    size = 2_000_000
    publish(hub, "acme/outage", size)
    hub.drop_connection("acme/outage", WEIGHTS, after_bytes=1_000_000, then_outage=True)
    manager = managers()
    failed = finished(manager, manager.start("acme/outage")["id"])
    assert failed["state"] == "failed"
    assert "503" in failed["error"] and WEIGHTS in failed["error"]
    on_disk = next(f["done"] for f in failed["files"] if f["name"] == WEIGHTS)
    assert 0 < on_disk <= 1_000_000 and failed["bytes_done"] < failed["bytes_total"]
    assert paths.partial_dir(tmp_path / "models", "acme/outage").is_dir()
    assert not paths.local_dir(tmp_path / "models", "acme/outage").exists()

    hub.outage = False
    manager.resume(failed["id"])
    result = finished(manager, failed["id"])
    assert result["state"] == "completed", result["error"]
    assert hub.range_starts("acme/outage", WEIGHTS)[-1] == on_disk
    assert hub.bytes_served("acme/outage", WEIGHTS) == 1_000_000 + size - on_disk
    assert_identical(hub, paths.local_dir(tmp_path / "models", "acme/outage"), "acme/outage")


def served_settles(hub, repo_id):
    """Bytes served once they stop growing (the transfer process is gone)."""
    last = [-1]

    def stable():
        now = hub.bytes_served(repo_id)
        if now == last[0]:
            return True
        last[0] = now
        return False

    wait_for(stable, 10, "the transfer to stop", every_s=0.5)
    return last[0]


def test_shutdown_then_new_manager_resumes_where_it_stopped(hub, managers, tmp_path):
    size = 3_000_000
    publish(hub, "acme/restart", size)
    hub.throttle_bps = 1_000_000
    first = managers()
    did = first.start("acme/restart")["id"]
    wait_for(lambda: first.get(did)["bytes_done"] > 600_000, 20, "some progress", every_s=0.05)
    first.shutdown()
    served_settles(hub, "acme/restart")
    weights_served = hub.bytes_served("acme/restart", WEIGHTS)

    second = managers()  # a new API process on the same state folder
    (listed,) = second.list()
    assert listed["state"] == "queued"
    on_disk = listed["bytes_done"]  # read from the files on disk
    assert 600_000 < on_disk < listed["bytes_total"]
    hub.throttle_bps = None
    assert [r["id"] for r in second.resume_unfinished()] == [did]
    result = finished(second, did)
    assert result["state"] == "completed", result["error"]
    weights_on_disk = next(f["done"] for f in listed["files"] if f["name"] == WEIGHTS)
    assert hub.range_starts("acme/restart", WEIGHTS)[-1] == weights_on_disk
    assert hub.bytes_served("acme/restart", WEIGHTS) == weights_served + size - weights_on_disk
    assert_identical(hub, paths.local_dir(tmp_path / "models", "acme/restart"), "acme/restart")


CRASHING_API = textwrap.dedent("""
    import sys, time
    from app.hub.downloads import DownloadManager
    manager = DownloadManager(sys.argv[1], sys.argv[2], endpoint=sys.argv[3], min_free_bytes=0)
    manager.start("acme/crash")
    print("started", flush=True)
    time.sleep(120)
""")


def test_transfer_stops_when_the_api_process_dies_and_resumes_at_restart(hub, managers, tmp_path):
    size = 3_000_000
    publish(hub, "acme/crash", size)
    hub.throttle_bps = 1_000_000
    api_process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_API, str(tmp_path / "models"), str(tmp_path / "state"), hub.url],
        stdout=subprocess.PIPE)
    try:
        assert api_process.stdout.readline().strip() == b"started"
        wait_for(lambda: hub.bytes_served("acme/crash") > 500_000, 20, "some progress", every_s=0.05)
    finally:
        api_process.kill()  # no shutdown, no cleanup: a crash
        api_process.wait()
    served_before = served_settles(hub, "acme/crash")  # the orphaned transfer stopped by itself
    assert served_before < size
    record = json.loads((tmp_path / "state" / "downloads" / "acme--crash--main.json").read_text())
    assert record["state"] == "running"

    hub.throttle_bps = None
    manager = managers()
    assert [r["id"] for r in manager.resume_unfinished()] == ["acme--crash--main"]
    result = finished(manager, "acme--crash--main")
    assert result["state"] == "completed", result["error"]
    assert hub.range_starts("acme/crash", WEIGHTS)[-1] > 0
    assert hub.bytes_served("acme/crash") < served_before + size  # not downloaded again from zero
    assert_identical(hub, paths.local_dir(tmp_path / "models", "acme/crash"), "acme/crash")


def test_cancel_stops_at_once_and_removes_partial_data(hub, managers, tmp_path):
    publish(hub, "acme/cancel", 4_000_000)
    hub.throttle_bps = 500_000
    events = []
    manager = managers(on_event=lambda kind, data: events.append(kind))
    did = manager.start("acme/cancel")["id"]
    wait_for(lambda: manager.get(did)["bytes_done"] > 200_000, 20, "some progress", every_s=0.05)
    began = time.monotonic()
    result = manager.cancel(did)
    assert time.monotonic() - began < 2.0
    assert result["state"] == "cancelled" and result["bytes_done"] == 0
    assert not paths.partial_dir(tmp_path / "models", "acme/cancel").exists()
    assert not paths.local_dir(tmp_path / "models", "acme/cancel").exists()
    served = served_settles(hub, "acme/cancel")
    assert served < 2_000_000  # stopped long before the end of the 4 MB file
    assert events == ["download_started", "download_cancelled"]  # cancel() delivers before returning
    assert manager.get(did)["state"] == "cancelled"


def test_not_enough_disk_is_refused_before_anything_is_written(hub, managers, tmp_path):
    hub.add_repo("acme/enormous", {"config.json": b"{}", WEIGHTS: b"\0" * 64},
                 declared_sizes={WEIGHTS: 10**15})  # 1 PB advertised, 64 bytes stored
    manager = managers()
    with pytest.raises(NotEnoughDisk, match=r"acme/enormous@main: 931322\.\d+ GiB still to download .* free"):
        manager.start("acme/enormous")
    publish(hub, "acme/small", 1000)
    with pytest.raises(NotEnoughDisk, match="margin"):
        managers(min_free_bytes=10**15).start("acme/small")
    assert manager.list() == []
    assert not (tmp_path / "models" / "hub" / ".partial" / "acme--enormous--main").exists()
    assert hub.requests["get"] == 0


def test_gated_repo_needs_a_token_that_never_leaks(hub, managers, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    publish(hub, "acme/gated", 300_000, gated=True)
    with pytest.raises(GatedRepo, match="token"):
        managers().start("acme/gated")
    with pytest.raises(GatedRepo, match="token"):
        managers(token="hf_wrong_token_123").start("acme/gated")

    events = []
    manager = managers(token=HUB_TOKEN, on_event=lambda kind, data: events.append((kind, data)))
    result = finished(manager, manager.start("acme/gated")["id"])
    assert result["state"] == "completed", result["error"]
    assert hub.authorized_requests > 0  # the token did reach the hub
    assert_identical(hub, paths.local_dir(tmp_path / "models", "acme/gated"), "acme/gated")

    out, err = capfd.readouterr()
    state_files = "".join(p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file())
    for text in (state_files, repr(manager.list()), repr(events), caplog.text, out, err):
        assert HUB_TOKEN not in text and "hf_wrong_token_123" not in text


@pytest.mark.parametrize(("repo_id", "revision"), [
    ("../etc", "main"), ("acme/../../etc", "main"), ("acme/name/extra", "main"), ("/abs/path", "main"),
    ("acme", "main"), ("acme/ok", "../../x"), ("acme/ok", "refs/pr/1"), ("acme/ok", ".."),
])
def test_bad_repo_ids_and_revisions_are_refused(hub, managers, repo_id, revision):
    with pytest.raises(BadRepoId):
        managers().start(repo_id, revision)
    assert sum(hub.requests.values()) == 0  # refused before asking the hub


def test_unknown_repo_revision_or_download_is_a_clear_error(hub, managers):
    publish(hub, "acme/real", 100)
    manager = managers()
    with pytest.raises(RepoNotFound, match="acme/missing does not exist"):
        manager.start("acme/missing")
    with pytest.raises(RepoNotFound, match="revision 'v9'"):
        manager.start("acme/real", "v9")
    for action in (manager.get, manager.cancel, manager.resume):
        with pytest.raises(KeyError):
            action("acme--nothing--main")
    assert manager.list() == []


def test_the_fetch_child_never_has_the_token_in_its_environment(hub, managers, monkeypatch):
    """It gets the token on its stdin only: a variable would show in /proc/<pid>/environ of the child."""
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)  # as the API process has it
    monkeypatch.setenv("LLMBOX_API_KEYS", "sk-not-for-the-child")
    publish(hub, "acme/gated2", 200_000, gated=True)
    environments = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        environments.append(kwargs.get("env"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr("app.hub.downloads.subprocess.Popen", popen)
    manager = managers(token=HUB_TOKEN)
    assert finished(manager, manager.start("acme/gated2")["id"])["state"] == "completed"
    assert environments and all(env is not None for env in environments)
    for env in environments:
        assert HUB_TOKEN not in "".join(env.values()) and "sk-not-for-the-child" not in "".join(env.values())
