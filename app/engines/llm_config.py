"""Build the ray.serve.llm configuration of one model from its registry entry.

A pure function of (entry, host facts, placement): the same entry gives a byte-identical config,
so redeploying an unchanged model never restarts it (Serve compares deployment versions). The
placement (which GPUs, how much memory) is the model manager's decision for one load; a model's
*settings* are the config without it (``config_key``), so moving a model to another GPU is not a
change of its settings.

On GPU hosts the placement shapes three things:
- Ray resources: each GPU is a custom node resource ``llmbox_gpu_<index>`` measured in GB
  (app/ray_head.py declares them from NVML), and the model's one bundle asks its budget of each
  of its GPUs. Ray's books then match the manager's ledger, so Ray never holds back a placement
  the manager admitted, and Ray's whole-GPU accounting never blocks a second model on a GPU.
- ``CUDA_VISIBLE_DEVICES``: set in the replica's environment to exactly its GPUs before anything
  starts, so the in-process engine (TP 1) or the multiprocessing workers (TP N, local ranks
  0..N-1) run on the GPUs the manager chose, not on cuda:0.
- The engine's memory: ``gpu_memory_utilization`` = budget / the GPU's total (vLLM starts only
  when that much is free, which admission checked) and ``kv_cache_memory_bytes`` = the KV part of
  the budget, so vLLM takes its budget and no more (not its default 90% of the GPU).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.cluster.nodes import NODE_SHARE, node_resource
from app.engines import host_rules
from app.engines.sources import resolve
from app.registry.schema import ModelEntry

DEPLOYMENT_NAME = "model"  # the same in every model app; the app name carries the model id
MODEL_APP_PREFIX = "model-"
GPU_RESOURCE_PREFIX = "llmbox_gpu_"  # + NVML index: a Ray node resource in GB of that GPU's memory
# A token share of Ray's own GPU resource in the bundle: ray.serve.llm runs its engine-config task
# with a sliver of a GPU inside the placement group, so the bundle must hold some; the real
# accounting is the llmbox_gpu_<index> resource.
RAY_GPU_SHARE = 0.01
CPU_SHARE = 0.05  # of Ray's CPU resource per model: see llm_config_dict


@dataclass(frozen=True)
class Placement:
    """The model manager's decision for one load: its devices and what each gives it."""

    gpus: tuple[int, ...]  # device indices (NVML's numbering); (0,) on a CPU host
    per_device_gb: float  # booked on each of them
    utilisation: float | None = None  # gpu_memory_utilization told to vLLM (GPU hosts)
    kv_cache_bytes: int | None = None  # kv_cache_memory_bytes per GPU told to vLLM (None: vLLM sizes it)
    node: str = ""  # the node (app/cluster/nodes.py): its bundle is pinned there; "": wherever Ray likes

    @classmethod
    def on_gpus(cls, gpus: list[int], per_device_gb: float, smallest_total_gb: float,
                kv_cache_bytes: int | None, node: str = "") -> Placement:
        """A GPU placement: the utilisation vLLM is told is the budget over the GPU's total,
        rounded up to vLLM's precision (4 decimals) so the engine never gets less than booked."""
        utilisation = min(1.0, math.ceil(per_device_gb / smallest_total_gb * 10_000) / 10_000)
        return cls(tuple(gpus), per_device_gb, utilisation, kv_cache_bytes, node)


def gpu_resource(index: int) -> str:
    return f"{GPU_RESOURCE_PREFIX}{index}"


@dataclass(frozen=True)
class EngineHost:
    """Facts about this host that shape every model's engine config."""

    device: Literal["cpu", "gpu"]
    cache_dir: Path  # VLLM_CACHE_ROOT
    cpu_kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU hosts
    models_dir: Path | None = None  # where Hugging Face downloads live (app/hub/paths.py)
    model_roots: tuple[Path, ...] = ()  # further folders absolute sources may be in (LLMBOX_MODEL_ROOTS)
    allow_remote_code: bool = False  # LLMBOX_ALLOW_REMOTE_CODE (app/engines/host_rules.py)


def app_name(model_id: str) -> str:
    """The Serve application that holds this model."""
    return f"{MODEL_APP_PREFIX}{model_id}"


def model_of(app: str) -> str | None:
    """The model id a Serve application holds, or None for other applications (the router)."""
    return app[len(MODEL_APP_PREFIX):] if app.startswith(MODEL_APP_PREFIX) else None


def config_key(config: dict[str, Any]) -> str:
    """A model's engine config as a comparable string (a change means a reload)."""
    return json.dumps(config, sort_keys=True)


def engine_kwargs(entry: ModelEntry, placement: Placement | None = None) -> dict[str, Any]:
    """vLLM engine arguments for this entry (and, on a GPU, what its placement gives it)."""
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
    if engine.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = engine.kv_cache_memory_bytes
    if placement is not None and placement.utilisation is not None:
        kwargs["gpu_memory_utilization"] = placement.utilisation
        if placement.kv_cache_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = placement.kv_cache_bytes
    if entry.task == "embed":
        kwargs["runner"] = "pooling"
    kwargs.update(engine.extra_args)  # allow-listed by the schema (ENGINE_ARG_GROUPS)
    return kwargs


def llm_config_dict(entry: ModelEntry, host: EngineHost, placement: Placement | None = None) -> dict[str, Any]:
    """The LLMConfig fields (plain data, so tests and diffs can compare them).

    Without a placement (GPU hosts): the model's settings only, to compare (``config_key``).
    Raises NotAllowedOnHost for an entry this host refuses (no engine is ever built for it)."""
    host_rules.check(entry, host)
    # Engines share the cores; Ray only needs to place them. Memory, not cores, limits how many
    # models are resident (the manager's ledger), so the share is small: 0.5 let a 2-core host
    # hold only four models, and a fifth sat pending in Ray with room in the ledger.
    bundle: dict[str, float] = {"CPU": CPU_SHARE}
    if placement is not None and placement.node:  # on the node admission chose (its GPUs are that node's)
        bundle[node_resource(placement.node)] = NODE_SHARE
    env = {
        "VLLM_CACHE_ROOT": str(host.cache_dir),
        "VLLM_NO_USAGE_STATS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Read by vLLM's CPU build only (the GPU build ignores it); also set on GPU hosts, where the
        # logical-GPU tests run the CPU build under a GPU placement.
        "VLLM_CPU_KVCACHE_SPACE": str(host.cpu_kv_cache_gb),
    }
    if host.device == "gpu" and placement is not None:
        bundle["GPU"] = RAY_GPU_SHARE
        for index in placement.gpus:
            bundle[gpu_resource(index)] = math.ceil(placement.per_device_gb * 100) / 100
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in placement.gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering = NVML's (CUDA's default is fastest first)
    env.update(entry.engine.env)  # the schema refused any variable set here or outside the allow-list
    bundles = [bundle]
    # Weights are always a local folder (a revision is chosen by the download), so the engine
    # never needs the hub.
    env["HF_HUB_OFFLINE"] = "1"
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": entry.id, "model_source": resolve(entry, host.models_dir)},
        "engine_kwargs": engine_kwargs(entry, placement if host.device == "gpu" else None),
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
