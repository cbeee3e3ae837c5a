"""Will a hub model fit on this host? An estimate from the repo's metadata, before downloading it.

    need = weights + KV cache for one sequence of the full context + engine overhead

- weights: parameter counts per dtype from the repo's safetensors metadata (the hub's
  ``safetensors`` field, else the headers read with ``get_safetensors_metadata``); repos with
  only .bin/.pt weights are estimated from those files' sizes (the estimate says so in ``note``).
- KV cache: 2 (K and V) x layers x KV heads x head_dim x context x bytes per element, from
  config.json; context is the model's ``max_position_embeddings`` unless capped (``max_model_len``).
- overhead: a fixed amount per device plus a fraction of the rest (see the constants).

The verdict compares the need per device with the host's free memory: ``fits`` within
FITS_MARGIN of one device's free memory, ``tight`` within all of it, else ``does not fit``;
``tensor_parallel_size`` is the smallest power of two that splits it enough. Once the box has
loaded a model, the measured figure replaces the estimate (``basis: measured``).

GB here means GiB (1024**3 bytes), as everywhere in llmbox (app.gpu.memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from huggingface_hub import HfApi
from huggingface_hub.errors import RemoteEntryNotFoundError

from app.gpu.memory import GIB
from app.hub import paths
from app.hub.errors import BadRepoId, translate
from app.hub.repo_files import read_json, weight_files

FITS_MARGIN = 0.85  # "fits" leaves 15% of free memory for other processes and estimate error
# Engine overhead per device. The fixed part: the CUDA context, cuBLAS/NCCL workspaces and the
# CUDA graphs vLLM captures for decode batch sizes take ~1-1.5 GiB per GPU whatever the model.
# On CPU hosts the fixed part is the engine process itself: the tiny model's vLLM CPU engine
# measured ~3.1 GiB RSS with a 1 GiB KV space (ENVIRONMENT.md), i.e. ~2 GiB besides the KV cache.
GPU_OVERHEAD_FIXED_GB = 1.5
CPU_OVERHEAD_FIXED_GB = 2.0
# The proportional part: prefill activations (vLLM's profiling peak grows with hidden size) and
# allocator fragmentation grow with the model.
OVERHEAD_FRACTION = 0.10
TP_SIZES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_ELEMENT_BYTES = 2  # bf16/fp16, what nearly every checkpoint on the hub uses

# Bytes per element of safetensors dtypes (parameter counts from the hub are keyed by these).
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
               "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
               "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75}
TORCH_DTYPE_BYTES = {"float64": 8, "double": 8, "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "max_seq_len", "seq_length", "n_positions",
                "n_ctx")

Verdict = Literal["fits", "tight", "does not fit", "unknown"]


@dataclass(frozen=True)
class HostMemory:
    """What a host can give a model: per-device free and total GB (one entry on CPU hosts)."""

    kind: Literal["gpu", "cpu"]
    free_gb: tuple[float, ...]
    total_gb: tuple[float, ...]
    names: tuple[str, ...]

    @classmethod
    def cpu(cls, budget_gb: float, free_gb: float | None = None) -> HostMemory:
        return cls("cpu", (budget_gb if free_gb is None else min(free_gb, budget_gb),), (budget_gb,), ("cpu",))

    @classmethod
    def gpus(cls, devices: list[tuple[str, float, float]]) -> HostMemory:
        """From (name, free GB, total GB) per GPU."""
        return cls("gpu", tuple(d[1] for d in devices), tuple(d[2] for d in devices), tuple(d[0] for d in devices))

    @classmethod
    def detect(cls, device: Literal["auto", "cpu", "gpu"] = "auto", cpu_budget_gb: float | None = None) -> HostMemory:
        """This host: every GPU through NVML, or (no GPU) the CPU budget capped by available RAM."""
        from app.gpu.nvml import detect_device

        if detect_device(device) == "gpu":
            import pynvml

            pynvml.nvmlInit()
            try:
                devices = []
                for i in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    name = pynvml.nvmlDeviceGetName(handle)
                    devices.append((name.decode() if isinstance(name, bytes) else name,
                                    info.free / GIB, info.total / GIB))
            finally:
                pynvml.nvmlShutdown()
            return cls.gpus(devices)
        import psutil

        memory = psutil.virtual_memory()
        return cls.cpu(cpu_budget_gb or 0.75 * memory.total / GIB, memory.available / GIB)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --- the arithmetic (pure) -------------------------------------------------------------------------
def weights_bytes(parameters: Mapping[str, int]) -> int:
    """Bytes of the weights from parameter counts per safetensors dtype (unknown dtypes count as 2 bytes)."""
    return int(sum(count * DTYPE_BYTES.get(dtype.upper(), DEFAULT_ELEMENT_BYTES)
                   for dtype, count in parameters.items()))


def text_config(config: Mapping) -> Mapping:
    """The language model's part of a config (multimodal configs nest it under ``text_config``)."""
    nested = config.get("text_config")
    return nested if "num_hidden_layers" not in config and isinstance(nested, Mapping) else config


def element_bytes(config: Mapping) -> int:
    """Bytes per KV cache element: the model dtype (``torch_dtype``, or ``dtype`` in newer configs)."""
    for cfg in (text_config(config), config):
        dtype = cfg.get("torch_dtype") or cfg.get("dtype")
        if isinstance(dtype, str) and dtype.removeprefix("torch.") in TORCH_DTYPE_BYTES:
            return TORCH_DTYPE_BYTES[dtype.removeprefix("torch.")]
    return DEFAULT_ELEMENT_BYTES


def kv_bytes_per_token(config: Mapping) -> int | None:
    """KV cache bytes per token of context, or None when the config lacks the shapes."""
    cfg = text_config(config)
    layers, heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
    if not layers:
        return None
    if cfg.get("kv_lora_rank"):  # MLA (DeepSeek): one compressed latent plus the rope part per layer
        return int(layers * (cfg["kv_lora_rank"] + cfg.get("qk_rope_head_dim", 0)) * element_bytes(config))
    if not heads:
        return None
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or (cfg.get("hidden_size", 0) // heads)
    if not head_dim:
        return None
    return int(2 * layers * kv_heads * head_dim * element_bytes(config))


def model_context(config: Mapping) -> int | None:
    """The context length the model was built for (config.json), if it says."""
    cfg = text_config(config)
    return next((int(cfg[k]) for k in CONTEXT_KEYS if isinstance(cfg.get(k), int) and cfg[k] > 0), None)


def overhead_bytes(model_bytes: float, tp: int, kind: Literal["gpu", "cpu"]) -> float:
    """Engine overhead on each of ``tp`` devices holding ``model_bytes / tp`` of weights and cache."""
    fixed = GPU_OVERHEAD_FIXED_GB if kind == "gpu" else CPU_OVERHEAD_FIXED_GB
    return model_bytes / tp * OVERHEAD_FRACTION + fixed * GIB


def per_device_bytes(model_bytes: float, tp: int, kind: Literal["gpu", "cpu"]) -> float:
    """Memory each device needs when the model (weights + KV cache) is split over ``tp`` devices."""
    return model_bytes / tp + overhead_bytes(model_bytes, tp, kind)


def place(need_per_device: Callable[[int], float], host: HostMemory) -> dict:
    """Verdict and tensor-parallel size for a need (bytes per device as a function of TP) on this host.

    Devices beyond this host's count (a suggestion to use more GPUs) are assumed to be like its
    largest GPU, empty.
    """
    free = sorted(host.free_gb, reverse=True)
    if not free:
        return {"verdict": "unknown", "tensor_parallel_size": None, "enough_gpus": None}
    count = len(free) if host.kind == "gpu" else 1
    sizes = TP_SIZES if host.kind == "gpu" else (1,)

    def capacity_gb(tp: int) -> float:
        return free[tp - 1] if tp <= count else max(host.total_gb)

    def smallest(share: float) -> int | None:
        return next((tp for tp in sizes if need_per_device(tp) / GIB <= share * capacity_gb(tp)), None)

    fit, tight = smallest(FITS_MARGIN), smallest(1.0)
    if fit is not None and fit <= count:
        verdict, tp = "fits", fit
    elif tight is not None and tight <= count:
        verdict, tp = "tight", tight
    else:
        verdict, tp = "does not fit", fit or tight
    if host.kind == "cpu":  # one engine process: no tensor parallelism to suggest
        return {"verdict": verdict, "tensor_parallel_size": 1, "enough_gpus": None}
    enough = tp is not None and tp <= count
    return {"verdict": verdict, "tensor_parallel_size": tp, "enough_gpus": enough}


def _gb(value: float | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def estimate(host: HostMemory, *, weights: int, config: Mapping | None, params: int | None = None,
             max_model_len: int | None = None, measured_gb: float | None = None, note: str | None = None,
             repo_id: str | None = None, revision: str | None = None) -> dict:
    """The fit estimate from known numbers (see the module docstring for the record's meaning)."""
    notes = [note] if note else []
    context = kv = None
    if config is not None:
        context = model_context(config)
        if max_model_len:
            context = min(context, max_model_len) if context else max_model_len
        per_token = kv_bytes_per_token(config)
        if per_token is not None and context:
            kv = per_token * context
        else:
            notes.append("config.json does not give the attention shapes or context: KV cache not counted")
    model_bytes = weights + (kv or 0)
    if measured_gb is not None:
        # The box measured the loaded model (engine overhead included): that replaces the estimate.
        need_at = lambda tp: measured_gb * GIB / tp  # noqa: E731
        overhead = None
    else:
        need_at = lambda tp: per_device_bytes(model_bytes, tp, host.kind)  # noqa: E731
        overhead = overhead_bytes(model_bytes, 1, host.kind)
    placed = place(need_at, host)
    tp = placed["tensor_parallel_size"] or 1
    return {
        "repo_id": repo_id, "revision": revision,
        "basis": "measured" if measured_gb is not None else "estimated",
        **placed,
        "need_gb": _gb(need_at(1)), "per_device_gb": _gb(need_at(tp)),
        "weights_gb": _gb(weights), "kv_cache_gb": _gb(kv), "overhead_gb": _gb(overhead),
        "context": context, "params": params, "size_bytes": weights,
        "host": host.as_dict(), "note": "; ".join(notes) or None, "reason": None,
    }


def unknown(repo_id: str, revision: str | None, reason: str, host: HostMemory | None = None) -> dict:
    """The record of a repo whose metadata could not be read: same keys, verdict ``unknown``."""
    return {"repo_id": repo_id, "revision": revision, "basis": "estimated", "verdict": "unknown",
            "tensor_parallel_size": None, "enough_gpus": None, "need_gb": None, "per_device_gb": None,
            "weights_gb": None, "kv_cache_gb": None, "overhead_gb": None, "context": None, "params": None,
            "size_bytes": None, "host": host.as_dict() if host else None, "note": None, "reason": reason}


# --- through huggingface_hub -------------------------------------------------------------------------
def repo_weights(api: HfApi, info, repo_id: str, revision: str | None) -> tuple[int, int | None, str | None]:
    """(weight bytes, parameter count or None, note) of a repo, from model_info(files_metadata=True)."""
    if info.safetensors and info.safetensors.parameters:
        counts = info.safetensors.parameters
        return weights_bytes(counts), sum(counts.values()), None
    names = [s.rfilename for s in info.siblings or []]
    if any(n.endswith(".safetensors") for n in names):
        # The hub did not index this repo's safetensors: read the headers (HTTP Range reads).
        counts = api.get_safetensors_metadata(repo_id, revision=revision).parameter_count
        return weights_bytes(counts), sum(counts.values()), None
    files = set(weight_files(names))
    size = sum(s.size or 0 for s in info.siblings or [] if s.rfilename in files)
    if not files:
        return 0, None, "no weight files found in the repo: weights not counted"
    return size, None, f"no safetensors: weights estimated from the sizes of {len(files)} weight file(s)"


def estimate_repo(api: HfApi, repo_id: str, revision: str | None = None, host: HostMemory | None = None,
                  measured_gb: float | None = None, max_model_len: int | None = None) -> dict:
    """The fit estimate of a hub repo on ``host`` (default: this host). Raises HubError subclasses."""
    try:
        repo_id, revision = paths.check_repo(repo_id, revision)
    except ValueError as exc:
        raise BadRepoId(str(exc)) from None
    host = host or HostMemory.detect()
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        weights, params, note = repo_weights(api, info, repo_id, revision)
        config = None if measured_gb is not None else _config(api, repo_id, revision)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a HubError with a readable reason
        raise translate(exc, repo_id, revision) from exc
    if config is None and measured_gb is None:
        note = "; ".join(filter(None, [note, "no config.json: KV cache not counted"]))
    return estimate(host, weights=weights, config=config, params=params, max_model_len=max_model_len,
                    measured_gb=measured_gb, note=note, repo_id=repo_id, revision=revision)


def _config(api: HfApi, repo_id: str, revision: str | None) -> dict | None:
    try:
        return read_json(api, repo_id, "config.json", revision)
    except RemoteEntryNotFoundError:  # e.g. GGUF-only or adapter repos
        return None
