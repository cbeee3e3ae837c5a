"""Build the ray.serve.llm configuration of one model from its registry entry.

A pure function of (entry, host facts): the same entry gives a byte-identical config, so
redeploying an unchanged model never restarts it (Serve compares deployment versions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.engines.sources import resolve
from app.registry.schema import ModelEntry

DEPLOYMENT_NAME = "model"  # the same in every model app; the app name carries the model id
MODEL_APP_PREFIX = "model-"


@dataclass(frozen=True)
class EngineHost:
    """Facts about this host that shape every model's engine config."""

    device: Literal["cpu", "gpu"]
    cache_dir: Path  # VLLM_CACHE_ROOT
    cpu_kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU hosts
    models_dir: Path | None = None  # where Hugging Face downloads live (app/hub/paths.py)


def app_name(model_id: str) -> str:
    """The Serve application that holds this model."""
    return f"{MODEL_APP_PREFIX}{model_id}"


def model_of(app: str) -> str | None:
    """The model id a Serve application holds, or None for other applications (the router)."""
    return app[len(MODEL_APP_PREFIX):] if app.startswith(MODEL_APP_PREFIX) else None


def config_key(config: dict[str, Any]) -> str:
    """A model's engine config as a comparable string (a change means a reload)."""
    return json.dumps(config, sort_keys=True)


def engine_kwargs(entry: ModelEntry) -> dict[str, Any]:
    """vLLM engine arguments for this entry."""
    engine = entry.engine
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": engine.tensor_parallel_size,
        "dtype": engine.dtype,
        "enforce_eager": engine.enforce_eager,
    }
    if engine.max_model_len is not None:
        kwargs["max_model_len"] = engine.max_model_len
    if engine.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
    if entry.task == "embed":
        kwargs["runner"] = "pooling"
    kwargs.update(engine.extra_args)
    return kwargs


def llm_config_dict(entry: ModelEntry, host: EngineHost) -> dict[str, Any]:
    """The LLMConfig fields (plain data, so tests and diffs can compare them)."""
    tp = entry.engine.tensor_parallel_size
    if host.device == "gpu":
        bundles = [{"GPU": 1, "CPU": 1} for _ in range(tp)]
    else:
        bundles = [{"CPU": 0.5}]  # CPU engines share the cores; Ray only needs to place them
    env = {
        "VLLM_CACHE_ROOT": str(host.cache_dir),
        "VLLM_NO_USAGE_STATS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if host.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(host.cpu_kv_cache_gb)
    # Weights are always a local folder (a revision is chosen by the download), so the engine
    # never needs the hub.
    env["HF_HUB_OFFLINE"] = "1"
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": entry.id, "model_source": resolve(entry, host.models_dir)},
        "engine_kwargs": engine_kwargs(entry),
        "placement_group_config": {"bundles": bundles},
        "deployment_config": {
            "num_replicas": 1,  # residency is the model manager's job, not Serve autoscaling
            "ray_actor_options": {"num_cpus": 0},  # else Serve adds 1 CPU to the first bundle
            "max_constructor_retry_count": 1,  # fail fast; the manager retries with backoff
            # The manager unloads a model when nothing is in flight (or it cut the requests off):
            # look for the end of requests every 0.2 s rather than Serve's 2 s before stopping.
            "graceful_shutdown_wait_loop_s": 0.2,
        },
        "runtime_env": {"env_vars": env},
        "log_engine_metrics": False,
    }
    config["callback_config"] = {"callback_class": "app.engines.lean.SkipNodeInit"}
    return config


def build_app(config: dict[str, Any]):
    """The Serve application for a model from its ``llm_config_dict`` (built once per load)."""
    from ray.serve.llm import LLMConfig, build_llm_deployment

    from app.engines.lean import InProcessVLLMEngine
    from app.engines.model_server import ModelServer

    return build_llm_deployment(
        LLMConfig(**config),
        bind_kwargs={"engine_cls": InProcessVLLMEngine},
        override_serve_options={"name": DEPLOYMENT_NAME},
        deployment_cls=ModelServer,
    )
