"""The model registry's schema: what a registry file may say, and nothing else.

Unknown keys are rejected everywhere (``extra="forbid"``) so a typo in the YAML is an error,
not a silently ignored setting. Validators name the bad value.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# What clients send as `model`. It also becomes a Serve application name and a file name,
# so: no slashes, no "..", no spaces or control characters.
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
HF_REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
PACKAGE_PREFIX = "package:"
PACKAGE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9._-]+)*$")
# A branch, tag or commit. No '/': a revision is one folder name of a download (app/hub/paths.py),
# so refs/pr/N is not supported.
REVISION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_revision(revision: str) -> str:
    """A Hugging Face revision llmbox can download and serve; ValueError naming it otherwise."""
    if not REVISION_PATTERN.fullmatch(revision) or ".." in revision:
        raise ValueError(f"revision {revision!r} is not allowed: a branch, tag or commit (1-128 letters, digits, "
                         "'.', '_' or '-') without '/' or '..'")
    return revision


# Engine environment variables a registry entry may set (engine.env): the knobs of CUDA, NCCL, vLLM,
# PyTorch and Triton, e.g. NCCL_P2P_DISABLE=1 for tensor parallel on consumer boards behind an IOMMU.
# Nothing else: a variable such as LD_PRELOAD or PYTHONPATH would run code of the editor's choice.
ENGINE_ENV_PREFIXES = ("NCCL_", "VLLM_", "CUDA_", "TORCH_", "PYTORCH_", "TRITON_", "OMP_", "TOKENIZERS_")
# Set for the engine by llmbox (app/engines/llm_config.py: from the placement and the host) or by
# Ray/vLLM's own process setup; an entry cannot change them. tests/engines/test_llm_config.py checks
# that every variable llm_config sets is refused here.
ENGINE_ENV_OWNED = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "VLLM_CACHE_ROOT", "VLLM_CPU_KVCACHE_SPACE",
                    "VLLM_NO_USAGE_STATS", "VLLM_HOST_IP", "VLLM_PORT")


def check_engine_env(env: dict[str, str]) -> dict[str, str]:
    """engine.env as strings, or ValueError naming the variable that is not allowed."""
    checked = {}
    for name, value in env.items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,127}", name) or not name.startswith(ENGINE_ENV_PREFIXES):
            raise ValueError(f"engine.env: {name!r} is not allowed: only variables starting with "
                             f"{', '.join(ENGINE_ENV_PREFIXES)} (upper case)")
        if name in ENGINE_ENV_OWNED:
            raise ValueError(f"engine.env: {name} is set by llmbox (from the model's placement and the host) "
                             "or by Ray for the engine")
        if isinstance(value, bool):
            value = "1" if value else "0"
        if not isinstance(value, (str, int, float)) or "\x00" in str(value) or len(str(value)) > 1024:
            raise ValueError(f"engine.env: {name} needs a plain value (text or a number, at most 1024 characters)")
        checked[name] = str(value)
    return checked


# Engine arguments a registry entry may pass to vLLM (engine.extra_args), by group. An allow-list, because
# vLLM's arguments also name Python to import (worker_cls, worker_extension_cls, scheduler_cls,
# logits_processors, *_plugin, compilation_config's passes), files to read or write
# (allowed_local_media_path, download_dir, log_config_file, speculative_config's model, lora_modules) and
# hosts to talk to (kv_transfer_config, kv_events_config, otlp_traces_endpoint): with any of those an
# admin token would run code or read files as the service user. Every argument below tunes how vLLM runs
# the weights the entry names; none takes a path, a Python name or an address (the few that could are
# narrowed by check_engine_arg). Not here on purpose: pipeline_parallel_size and data_parallel_size
# (the manager books tensor_parallel_size GPUs, no more), distributed_executor_backend (set by
# app/engines/lean.py), served_model_name (llmbox names models), enable_lora and its kin (llmbox has no
# adapter source, and lora_modules are paths), load_format and model_loader_extra_config (loaders that
# fetch from elsewhere), enable_prompt_embeds (clients would send tensors to deserialize).
# tests/registry/test_engine_args.py checks every name against the installed vLLM: a field of
# AsyncEngineArgs or FrontendArgs, the two sets ray.serve.llm splits engine_kwargs into.
ENGINE_ARG_GROUPS: dict[str, tuple[str, ...]] = {
    # Scheduling and batching: how many sequences and tokens one step takes, and in what order.
    "scheduling": ("max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "long_prefill_token_threshold",
                   "disable_chunked_mm_input", "scheduling_policy", "async_scheduling", "stream_interval"),
    # Memory and the KV cache: sizes, dtypes and switches of vLLM's own allocator.
    "memory": ("block_size", "enable_prefix_caching", "prefix_caching_hash_algo", "kv_cache_dtype", "cpu_offload_gb",
               "num_gpu_blocks_override", "disable_sliding_window", "disable_cascade_attn",
               "disable_hybrid_kv_cache_manager", "mamba_cache_dtype", "mamba_ssm_cache_dtype"),
    # Quantization and kernels: which of vLLM's built-in implementations run the weights, chosen by name.
    "quantization": ("quantization", "model_impl", "attention_backend", "enable_expert_parallel",
                     "disable_custom_all_reduce", "cudagraph_capture_sizes", "max_cudagraph_capture_size",
                     "optimization_level", "performance_mode"),
    # The model's config and sampling defaults, as data. hf_overrides may change `architectures`, so which
    # of vLLM's built-in model classes runs, but loads no code without trust_remote_code; generation_config
    # only 'auto' or 'vllm' (any other value is a folder vLLM reads).
    "model config": ("hf_overrides", "generation_config", "override_generation_config", "seed", "max_logprobs",
                     "logprobs_mode", "pooler_config", "limit_mm_per_prompt", "mm_processor_kwargs",
                     "mm_processor_cache_gb", "skip_mm_profiling", "interleave_mm_strings", "language_model_only"),
    # Tokenizer and output parsing: vLLM's registered tokenizer modes and parsers, chosen by name (the
    # *_plugin variants, which name a Python file, are not here). chat_template only as inline Jinja, which
    # vLLM renders in its sandbox; a path would let the entry read a file.
    "parsing": ("tokenizer_mode", "skip_tokenizer_init", "tool_call_parser", "enable_auto_tool_choice",
                "reasoning_parser", "chat_template", "chat_template_content_format", "default_chat_template_kwargs",
                "response_role"),
    # Metrics that stay inside the box.
    "logging": ("disable_log_stats",),
    # The model repo's own Python runs in the engine. The schema allows it (true or false); whether this host
    # does is LLMBOX_ALLOW_REMOTE_CODE, checked where the settings are known (app/engines/host_rules.py).
    "remote code": ("trust_remote_code",),
}
ENGINE_ARGS_ALLOWED = frozenset(name for names in ENGINE_ARG_GROUPS.values() for name in names)
# Arguments whose value is a mapping handed to vLLM (or to the model's processor) as it is.
_MAPPING_ARGS = ("hf_overrides", "override_generation_config", "pooler_config", "limit_mm_per_prompt",
                 "mm_processor_kwargs", "default_chat_template_kwargs")


def _nested_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*map(str, value), *(k for v in value.values() for k in _nested_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _nested_keys(v)]
    return []


def check_engine_arg(name: str, value: Any) -> None:
    """ValueError naming ``name`` unless it is on the allow-list, with a value of the narrowed kind."""
    if name not in ENGINE_ARGS_ALLOWED:
        raise ValueError(f"engine argument {name!r} is not on the allow-list of engine arguments (performance, "
                         "memory, scheduling, quantization and parsing settings: ENGINE_ARG_GROUPS in "
                         "app/registry/schema.py); arguments that load code, read or write files or open "
                         "connections are not allowed")
    if name == "trust_remote_code" and not isinstance(value, bool):
        raise ValueError("engine argument 'trust_remote_code' must be true or false")
    if name == "generation_config" and value not in ("auto", "vllm"):
        raise ValueError(f"engine argument 'generation_config' is {value!r}: only 'auto' (the model's "
                         "generation_config.json) or 'vllm' (vLLM's defaults), not a folder")
    if name == "chat_template" and not (isinstance(value, str) and ("{{" in value or "{%" in value)):
        raise ValueError("engine argument 'chat_template' must be the Jinja template itself (with {{ or {%), "
                         "not a file name or path")
    if name in _MAPPING_ARGS and not isinstance(value, dict):
        raise ValueError(f"engine argument {name!r} must be a mapping")
    if "trust_remote_code" in _nested_keys(value):
        raise ValueError(f"engine argument {name!r} may not contain trust_remote_code: set it in engine.extra_args "
                         "itself, where the host decides (LLMBOX_ALLOW_REMOTE_CODE)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineSettings(_Strict):
    """vLLM engine settings for one model (passed to its own engine, so models may differ)."""

    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs the model is split across.")
    max_model_len: int | None = Field(None, ge=16, description="Context length; default: the model's own.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field("auto", description="Weight/activation dtype.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of each GPU's memory vLLM may take; default: vLLM's."
    )
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, description="KV cache per GPU in bytes; default: llmbox's budget (concurrent_sequences x max_model_len)."
    )
    concurrent_sequences: int | None = Field(
        None, ge=1, le=1024,
        description="Full-length sequences the KV cache budget holds (shorter requests share it); default 2.",
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graph capture: faster start, slower decode.")
    extra_args: dict[str, Any] = Field(
        default_factory=dict, description="Further vLLM engine arguments from the allow-list (ENGINE_ARG_GROUPS), "
        "e.g. {max_num_seqs: 8, enable_prefix_caching: true}."
    )
    env: dict[str, Any] = Field(
        default_factory=dict,
        description="Environment variables of the engine's processes, e.g. {NCCL_P2P_DISABLE: 1}; only "
        + ", ".join(ENGINE_ENV_PREFIXES) + " variables, not those llmbox sets.",
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, Any]) -> dict[str, str]:
        return check_engine_env(value)

    @field_validator("extra_args")
    @classmethod
    def _no_shadowing(cls, value: dict[str, Any]) -> dict[str, Any]:
        typed = set(cls.model_fields) - {"extra_args"}
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise ValueError(f"engine argument name {key!r} is not a vLLM argument name (snake_case)")
            if key in typed:
                raise ValueError(f"engine argument {key!r} has its own field: set engine.{key} instead")
            if key in ("model", "task", "runner", "tokenizer", "revision"):
                raise ValueError(f"engine argument {key!r} is derived from the model entry; remove it")
            check_engine_arg(key, value[key])
        return value


class EmbedPrefixes(_Strict):
    """Text the router puts before each input of an embedding model (app/serving/embed_prefixes.py)."""

    query: str = Field("", max_length=64, description="Before a query (input_type: query).")
    document: str = Field("", max_length=64, description="Before a document (input_type: document, the default).")


class ModelEntry(_Strict):
    """One model that llmbox knows about."""

    id: str = Field(description="The name clients send as `model`; letters, digits, '.', '_', '-', ':'.")
    source: str = Field(
        description="Where the weights are: a Hugging Face repo id (org/name), an absolute local path (inside "
        "the models folder or LLMBOX_MODEL_ROOTS: the host checks), or package:<python_module>/<folder> for "
        "weights shipped inside an installed Python package."
    )
    revision: str | None = Field(None, description="Hugging Face revision (branch, tag or commit); default: main.")
    task: Literal["generate", "embed"] = Field("generate", description="Text generation or embeddings (pooling).")
    serve: bool = Field(False, description="Offered on the OpenAI endpoint (loaded when first requested).")
    always_on: bool = Field(False, description="Loaded at start and never unloaded by the idle reaper.")
    idle_timeout_s: int | None = Field(
        None, ge=0, description="Unload after this long with no request in flight; 0 = never; default: registry's."
    )
    memory_gb: float | None = Field(
        None, gt=0, description="Memory the loaded model needs: measured after its first load, or estimated."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings, description="vLLM engine settings.")
    embed_prefixes: EmbedPrefixes | None = Field(
        None, description="Task prefixes the model was trained with (embedding models), added by the router."
    )
    nodes: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,63}$")]] = Field(
        default_factory=list, max_length=64,
        description="Only these cluster nodes (LLMBOX_NODE_NAME of each) may load it; default: any node.",
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not MODEL_ID_PATTERN.fullmatch(value) or ".." in value:
            raise ValueError(
                f"model id {value!r} is not allowed: use 1-64 letters, digits, '.', '_', '-' or ':', "
                "starting with a letter or digit, without '..' or '/'"
            )
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value.startswith(PACKAGE_PREFIX):
            if not PACKAGE_PATTERN.fullmatch(value[len(PACKAGE_PREFIX):]) or ".." in value:
                raise ValueError(f"source {value!r}: expected package:<python_module>/<folder>")
        elif value.startswith("/"):
            if ".." in PurePosixPath(value).parts or "\x00" in value:
                raise ValueError(f"source {value!r}: a local path must be absolute and contain no '..'")
        elif not HF_REPO_PATTERN.fullmatch(value) or ".." in value:
            raise ValueError(
                f"source {value!r} is neither a Hugging Face repo id (org/name), an absolute path, "
                "nor package:<module>/<folder>"
            )
        return value

    @field_validator("revision")
    @classmethod
    def _check_revision(cls, value: str | None) -> str | None:
        # Refused here, before the edit is saved: the hub's paths refuse it too, so serving would fail on it.
        return value if value is None else check_revision(value)

    @model_validator(mode="after")
    def _prefixes_for_embeddings(self) -> ModelEntry:
        if self.embed_prefixes is not None and self.task != "embed":
            raise ValueError(f"model {self.id!r}: embed_prefixes is for task: embed models only")
        return self

    @model_validator(mode="after")
    def _pinned_means_served(self) -> ModelEntry:
        if self.always_on and not self.serve:
            raise ValueError(f"model {self.id!r}: always_on needs serve: true (a pinned model is a served one)")
        return self


class RegistryDefaults(_Strict):
    """Values a model entry inherits when it does not set its own."""

    idle_timeout_s: int = Field(600, ge=0, description="Default idle unload time in seconds; 0 = never.")


class Registry(_Strict):
    """The whole registry file (under the top-level key ``llmbox_registry``)."""

    revision: int = Field(0, ge=0, description="Bumped by every write; edits name the revision they were based on.")
    defaults: RegistryDefaults = Field(default_factory=RegistryDefaults, description="Defaults for all models.")
    models: list[ModelEntry] = Field(default_factory=list, description="The models, in display order.")

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        seen: set[str] = set()
        for model in models:
            if model.id in seen:
                raise ValueError(f"model id {model.id!r} appears more than once")
            seen.add(model.id)
        return models

    def get(self, model_id: str) -> ModelEntry | None:
        """The entry with this id, or None."""
        return next((m for m in self.models if m.id == model_id), None)

    def idle_timeout_s(self, model: ModelEntry) -> int:
        """The model's effective idle timeout (its own, else the registry default)."""
        return self.defaults.idle_timeout_s if model.idle_timeout_s is None else model.idle_timeout_s
