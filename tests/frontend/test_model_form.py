"""The model form's conversions (pure functions): what an edit sends is exactly what changed."""

from werkzeug.datastructures import MultiDict

from frontend.model_form import changes, entry_from_form, form_from_entry

ENTRY = {"id": "chat", "source": "org/chat", "revision": None, "task": "generate", "serve": True, "always_on": False,
         "idle_timeout_s": None, "memory_gb": 2.5, "nodes": [],
         "engine": {"dtype": "float32", "max_model_len": 512, "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
                    "gpu_memory_utilization": None, "enforce_eager": True, "extra_args": {"seed": 1, "a": 2}}}


def form(**overrides) -> MultiDict:
    values = {k: v for k, v in form_from_entry(ENTRY).items() if v not in (False, None)}
    values = {k: ("on" if v is True else str(v)) for k, v in values.items()}
    values.update(overrides)
    return MultiDict({k: v for k, v in values.items() if v is not None})


def test_an_unchanged_form_is_no_change():
    entry, errors = entry_from_form(form())
    assert errors == [] and changes(ENTRY, entry) == {}


def test_only_what_differs_is_sent_and_cleared_fields_reset():
    entry, _ = entry_from_form(form(serve=None, memory_gb="", engine_max_model_len="1024",
                                    engine_extra_args='{"seed": 2}'))
    assert changes(ENTRY, entry) == {"serve": False, "memory_gb": None,
                                     "engine": {"max_model_len": 1024, "extra_args": {"seed": 2, "a": None}}}


def test_unreadable_fields_are_named():
    _, errors = entry_from_form(form(idle_timeout_s="1.5", memory_gb="lots", engine_extra_args="nope"))
    assert errors == ["idle_timeout_s: '1.5' is not a whole number", "memory_gb: 'lots' is not a number",
                      'engine.extra_args: write a JSON object, e.g. {"max_num_seqs": 8}']


def test_node_pins_are_read_as_a_list_and_an_emptied_field_unpins():
    entry, _ = entry_from_form(form(nodes="gpu-a, gpu-b"))
    assert changes(ENTRY, entry) == {"nodes": ["gpu-a", "gpu-b"]}
    pinned = {**ENTRY, "nodes": ["gpu-a"]}
    assert form_from_entry(pinned)["nodes"] == "gpu-a"
    entry, _ = entry_from_form(form(nodes=""))
    assert changes(pinned, entry) == {"nodes": []}


def test_engine_env_edits_key_by_key_like_extra_args():
    current = {**ENTRY, "engine": {**ENTRY["engine"], "env": {"NCCL_P2P_DISABLE": "1", "NCCL_DEBUG": "INFO"}}}
    entry, errors = entry_from_form(MultiDict({**form(), "engine_env": '{"NCCL_P2P_DISABLE": "0"}'}))
    assert errors == []
    assert changes(current, entry) == {"engine": {"env": {"NCCL_P2P_DISABLE": "0", "NCCL_DEBUG": None}}}
    _, errors = entry_from_form(form(engine_env="[]"))
    assert errors == ['engine.env: write a JSON object, e.g. {"NCCL_P2P_DISABLE": "1"}']
