"""The registry store: comments survive edits, stale edits conflict, history and restore work."""

import pytest

from app.registry.defaults import default_registry_text
from app.registry.edits import ModelExists, ModelNotFound, add_model, remove_model, update_model
from app.registry.schema import ModelEntry
from app.registry.store import RegistryConflict, RegistryError, RegistryInvalid, RegistryStore

HAND_WRITTEN = """\
# Our models. Ask Ana before changing the 70B entry.
llmbox_registry:
  revision: 0
  defaults:
    idle_timeout_s: 600   # ten minutes
  models:
    # the one OpenWebUI uses for RAG
    - id: embed
      source: org/embed   # pinned upstream
      task: embed
      serve: true
      always_on: true
    - id: big
      source: org/big-70b
      serve: false  # too big for the night shift
"""


@pytest.fixture
def store(tmp_path):
    store = RegistryStore(tmp_path / "group_vars" / "all" / "models.yml")
    store.create(HAND_WRITTEN)
    return store


def test_comments_and_key_order_survive_an_edit(store):
    store.edit(0, lambda body: update_model(body, "big", {"serve": True, "engine": {"tensor_parallel_size": 2}}))
    text = store.path.read_text()
    for comment in ["# Our models. Ask Ana", "# ten minutes", "# the one OpenWebUI uses for RAG",
                    "# pinned upstream", "# too big for the night shift"]:
        assert comment in text
    assert text.index("id: embed") < text.index("id: big")
    registry = store.read()
    assert registry.revision == 1
    assert registry.get("big").serve and registry.get("big").engine.tensor_parallel_size == 2


def test_stale_edit_conflicts_and_writes_nothing(store):
    store.edit(0, lambda body: update_model(body, "big", {"serve": True}))
    before = store.path.read_text()
    with pytest.raises(RegistryConflict) as err:
        store.edit(0, lambda body: remove_model(body, "big"))
    assert (err.value.base_revision, err.value.current_revision) == (0, 1)
    assert store.path.read_text() == before


def test_invalid_edit_writes_nothing_and_names_the_field(store):
    before = store.path.read_text()
    with pytest.raises(RegistryInvalid, match=r"models\[1\]\.idle_timeout_s"):
        store.edit(0, lambda body: update_model(body, "big", {"idle_timeout_s": -5}))
    assert store.path.read_text() == before
    assert store.history() == [0]


def test_add_update_remove_and_their_errors(store):
    store.edit(0, lambda b: add_model(b, ModelEntry(id="new", source="/srv/models/new", serve=True)))
    assert "id: new" in store.path.read_text() and "always_on" not in store.path.read_text().split("id: new")[1]
    with pytest.raises(ModelExists):
        store.edit(1, lambda b: add_model(b, ModelEntry(id="new", source="o/x")))
    with pytest.raises(ModelNotFound, match="no model 'ghost'"):
        store.edit(1, lambda b: update_model(b, "ghost", {"serve": True}))
    store.edit(1, lambda b: update_model(b, "new", {"serve": None}))  # None: back to the default
    assert store.read().get("new").serve is False
    store.edit(2, lambda b: remove_model(b, "new"))
    assert store.read().get("new") is None


def test_history_keeps_every_revision_and_restore_makes_a_new_one(store):
    store.edit(0, lambda b: update_model(b, "big", {"serve": True}))
    store.edit(1, lambda b: remove_model(b, "big"))
    assert store.history() == [0, 1, 2]
    assert store.read_revision(1).get("big").serve
    restored = store.restore(2, 1)
    assert restored.revision == 3 and restored.get("big").serve
    assert "# too big for the night shift" in store.path.read_text()
    with pytest.raises(RegistryError, match="revision 99 is not in the history"):
        store.restore(3, 99)


def test_replace_takes_the_texts_body_and_comments_at_the_base_revision(store):
    text = HAND_WRITTEN.replace("revision: 0", "revision: 7").replace("600   # ten minutes", "60   # one minute")
    replaced = store.replace(0, text)
    assert (replaced.revision, replaced.defaults.idle_timeout_s) == (1, 60)  # the text's revision is not taken
    written = store.path.read_text()
    assert "# one minute" in written and "# ten minutes" not in written and "# pinned upstream" in written
    assert store.history() == [0, 1]
    with pytest.raises(RegistryConflict):
        store.replace(0, HAND_WRITTEN)  # stale base: nothing written
    with pytest.raises(RegistryInvalid, match="models"):
        store.replace(1, HAND_WRITTEN.replace("task: embed", "task: chat"))
    with pytest.raises(RegistryInvalid, match="top-level key"):
        store.replace(1, "models: []")
    assert store.path.read_text() == written and store.history() == [0, 1]


def test_history_is_pruned_to_the_configured_size(tmp_path):
    store = RegistryStore(tmp_path / "models.yml", history_keep=3)
    store.create(HAND_WRITTEN)
    for rev in range(5):
        store.edit(rev, lambda b, rev=rev: update_model(b, "big", {"idle_timeout_s": rev}))
    assert store.history() == [3, 4, 5]


def test_create_keeps_an_existing_file(store):
    store.edit(0, lambda b: update_model(b, "big", {"serve": True}))
    assert store.create(default_registry_text("cpu", store.path.parent)).revision == 1


def test_file_mode_set_by_the_operator_is_kept(store):
    store.path.chmod(0o640)
    store.edit(0, lambda b: update_model(b, "big", {"serve": True}))
    assert store.path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("text", ["just a string", "other_key: {}", "llmbox_registry: [1, 2]", "a: [unclosed"])
def test_a_file_that_is_not_a_registry_is_reported(tmp_path, text):
    path = tmp_path / "models.yml"
    path.write_text(text)
    with pytest.raises(RegistryInvalid):
        RegistryStore(path).read()
