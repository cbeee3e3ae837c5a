"""engine.extra_args takes only allow-listed vLLM arguments (ENGINE_ARG_GROUPS): none that loads code,
reads or writes files, opens connections, or takes what llmbox decides itself (M1 of the 2026-12 review)."""

import dataclasses

import pytest

from app.registry.schema import ENGINE_ARG_GROUPS, ENGINE_ARGS_ALLOWED, ModelEntry


def entry(extra_args: dict) -> ModelEntry:
    return ModelEntry(id="m", source="org/model", engine={"extra_args": extra_args})


def test_every_allowed_name_is_an_argument_of_the_installed_vllm():
    # ray.serve.llm splits engine_kwargs into these two sets and refuses any other name.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    real = {f.name for f in dataclasses.fields(AsyncEngineArgs)} | {f.name for f in dataclasses.fields(FrontendArgs)}
    assert not sorted(ENGINE_ARGS_ALLOWED - real)
    names = [name for names in ENGINE_ARG_GROUPS.values() for name in names]
    assert len(names) == len(set(names))  # each in one group


@pytest.mark.parametrize("name, value", [
    # code: a class, callable or Python file of the editor's choice is imported in the engine
    ("worker_cls", "evil.Worker"), ("worker_extension_cls", "evil.Extension"), ("scheduler_cls", "evil.Scheduler"),
    ("logits_processors", ["evil.Processor"]), ("tool_parser_plugin", "/tmp/evil.py"),
    ("reasoning_parser_plugin", "/tmp/evil.py"), ("compilation_config", {"inductor_passes": {"p": "evil.f"}}),
    ("io_processor_plugin", "evil"), ("structured_outputs_config", {"reasoning_parser_plugin": "/tmp/evil.py"}),
    # files: read (and shown to clients) or written as the service user
    ("allowed_local_media_path", "/"), ("download_dir", "/"), ("log_config_file", "/tmp/logging.json"),
    ("speculative_config", {"model": "/root/.ssh"}), ("lora_modules", ["a=/etc"]),
    ("model_loader_extra_config", {"path": "/"}), ("load_format", "tensorizer"), ("hf_token", True),
    # network: engine state or traces sent elsewhere
    ("kv_transfer_config", {"kv_connector": "x"}), ("kv_events_config", {"endpoint": "tcp://evil:5557"}),
    ("otlp_traces_endpoint", "http://evil:4317"),
    # what llmbox decides: placement, executor, names; LoRA has no adapter source here
    ("data_parallel_size", 2), ("distributed_executor_backend", "ray"),
    ("served_model_name", "other"), ("enable_lora", True), ("max_lora_rank", 64), ("enable_prompt_embeds", True),
    # unknown
    ("no_such_argument", 1),
])
def test_an_argument_off_the_allow_list_is_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"engine argument '{name}' is not on the allow-list"):
        entry({name: value})


def test_pipeline_parallel_goes_in_its_own_field_not_extra_args():
    with pytest.raises(ValueError, match="'pipeline_parallel_size' has its own field: set engine.pipeline_parallel"):
        entry({"pipeline_parallel_size": 2})


@pytest.mark.parametrize("args, message", [
    ({"chat_template": "/etc/passwd"}, "'chat_template' must be the Jinja template itself"),
    ({"chat_template": "tool_chat_template_llama3.1_json.jinja"}, "'chat_template' must be the Jinja template"),
    ({"generation_config": "/root"}, "'generation_config' is '/root': only 'auto'"),
    ({"trust_remote_code": "yes"}, "'trust_remote_code' must be true or false"),
    ({"hf_overrides": "architectures"}, "'hf_overrides' must be a mapping"),
    ({"mm_processor_kwargs": {"trust_remote_code": True}}, "may not contain trust_remote_code"),
    ({"hf_overrides": {"text_config": {"trust_remote_code": True}}}, "may not contain trust_remote_code"),
])
def test_allowed_arguments_that_could_name_a_file_or_smuggle_remote_code_are_narrowed(args, message):
    with pytest.raises(ValueError, match=message):
        entry(args)


def test_tuning_arguments_pass_as_written():
    args = {"max_num_seqs": 8, "max_num_batched_tokens": 4096, "enable_prefix_caching": True,
            "enable_chunked_prefill": True, "quantization": "awq", "kv_cache_dtype": "fp8", "block_size": 16,
            "cpu_offload_gb": 2, "seed": 0, "max_logprobs": 5, "disable_log_stats": True,
            "tool_call_parser": "hermes", "enable_auto_tool_choice": True, "reasoning_parser": "deepseek_r1",
            "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}", "limit_mm_per_prompt": {"image": 2},
            "mm_processor_kwargs": {"num_crops": 4},
            "hf_overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4}},  # rope_scaling is no EngineArgs field
            "generation_config": "vllm", "override_generation_config": {"temperature": 0.6},
            "tokenizer_mode": "mistral", "trust_remote_code": False}
    assert entry(args).engine.extra_args == args
