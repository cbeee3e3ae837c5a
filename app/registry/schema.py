"""The model registry's schema: what a registry file may say, and nothing else.

Unknown keys are rejected everywhere (``extra="forbid"``) so a typo in the YAML is an error,
not a silently ignored setting. Validators name the bad value.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
        default_factory=dict, description="Further vLLM engine arguments, e.g. {trust_remote_code: true}."
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
        return value


class EmbedPrefixes(_Strict):
    """Text the router puts before each input of an embedding model (app/serving/embed_prefixes.py)."""

    query: str = Field("", max_length=64, description="Before a query (input_type: query).")
    document: str = Field("", max_length=64, description="Before a document (input_type: document, the default).")


class ModelEntry(_Strict):
    """One model that llmbox knows about."""

    id: str = Field(description="The name clients send as `model`; letters, digits, '.', '_', '-', ':'.")
    source: str = Field(
        description="Where the weights are: a Hugging Face repo id (org/name), an absolute local path, "
        "or package:<python_module>/<folder> for weights shipped inside an installed Python package."
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
