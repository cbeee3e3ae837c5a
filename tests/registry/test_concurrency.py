"""Many writers, and writers killed mid-write: nothing is lost, nothing is half-written."""

import multiprocessing
import os
import random
import signal
import time

from app.registry.edits import add_model, update_model
from app.registry.schema import ModelEntry
from app.registry.store import RegistryConflict, RegistryStore

WRITERS = 8
EDITS_EACH = 50
START = "llmbox_registry:\n  revision: 0\n  models: []\n"
# The writers all edit one small entry (a big file would only measure YAML speed); each edit
# writes a value unique to (writer, edit), so the history shows exactly which edit made which revision.
SHARED = START.replace("[]", "\n    - id: shared\n      source: org/shared\n")


def mark(writer, i):
    return float(writer * 1000 + i + 1)


def _writer(path, writer, results):
    """Make EDITS_EACH accepted edits, retrying each on conflict; report what happened."""
    store = RegistryStore(path)
    accepted, conflicts, attempts = [], 0, 0
    for i in range(EDITS_EACH):
        while True:
            attempts += 1
            base = store.read().revision
            try:
                new = store.edit(base, lambda body: update_model(body, "shared", {"memory_gb": mark(writer, i)}))
                accepted.append((new.revision, mark(writer, i)))
                break
            except RegistryConflict as conflict:
                assert conflict.current_revision > base
                conflicts += 1
    results.put((writer, accepted, conflicts, attempts))


def test_concurrent_writers_lose_nothing_and_every_conflict_is_reported(tmp_path):
    path = tmp_path / "models.yml"
    RegistryStore(path).create(SHARED)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, w, results)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    # Meanwhile a reader must always see a complete, valid registry.
    reads = 0
    while any(p.is_alive() for p in procs):
        RegistryStore(path).read()
        reads += 1
        time.sleep(0.005)
    outcome = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0

    accepted = sorted(pair for _, pairs, _, _ in outcome for pair in pairs)
    conflicts = sum(c for _, _, c, _ in outcome)
    attempts = sum(a for _, _, _, a in outcome)
    total = WRITERS * EDITS_EACH
    store = RegistryStore(path)
    final = store.read()
    # Every accepted edit got its own revision, and the file counts exactly those edits.
    assert [rev for rev, _ in accepted] == list(range(1, total + 1))
    assert final.revision == total
    # Nothing lost or overwritten unseen: revision r holds exactly the value of the edit told "you are r".
    assert {rev: store.read_revision(rev).get("shared").memory_gb for rev in range(1, total + 1)} == dict(accepted)
    assert {v for _, v in accepted} == {mark(w, i) for w in range(WRITERS) for i in range(EDITS_EACH)}
    # Every attempt either landed or was refused with a conflict: none silently dropped.
    assert attempts == total + conflicts
    assert conflicts > 0, "8 racing writers should have collided at least once"
    assert store.history() == list(range(total + 1))
    assert reads > 0


def _slow_writer(path, ready):
    store = RegistryStore(path)
    base = store.read().revision
    os.write(ready, b"x")
    store.edit(base, lambda body: add_model(body, ModelEntry(id=f"killed-{base}", source="org/model")))
    os._exit(0)


def test_writer_killed_mid_write_leaves_the_old_or_the_new_version(tmp_path):
    path = tmp_path / "models.yml"
    store = RegistryStore(path)
    # A big registry makes each write take long enough for the kill to land inside it.
    models = "".join(f"    - id: bulk-{i}\n      source: org/bulk-{i}\n      memory_gb: {i + 1}\n" for i in range(300))
    store.create(START.replace("  models: []\n", "  models:\n" + models))
    t0 = time.monotonic()
    store.edit(0, lambda body: add_model(body, ModelEntry(id="timing", source="org/model")))
    edit_s = time.monotonic() - t0

    rng = random.Random(1234)
    ctx = multiprocessing.get_context("fork")
    outcomes = {"old": 0, "new": 0}
    for _ in range(50):
        old = store.read()
        r, w = os.pipe()
        proc = ctx.Process(target=_slow_writer, args=(path, w))
        proc.start()
        os.read(r, 1)  # the writer is about to write
        time.sleep(rng.uniform(0, edit_s * 2.0))  # a forked writer under load can take longer than the timed edit
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        os.close(r)
        os.close(w)

        now = store.read()  # parses and validates, or this raises
        if now.revision == old.revision:
            assert now == old
            outcomes["old"] += 1
        else:
            assert now.revision == old.revision + 1
            assert now.models[:-1] == old.models and now.models[-1].id == f"killed-{old.revision}"
            outcomes["new"] += 1
    # Both ends were hit, so the kills really fell before and after the rename.
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
    # The next writer clears the temp files that killed writers left behind.
    store.edit(store.read().revision, lambda body: add_model(body, ModelEntry(id="after", source="org/x")))
    assert not [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert not [p.name for p in store.history_dir.iterdir() if p.name.startswith(".tmp-")]
