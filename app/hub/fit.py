"""Will a hub model fit on this host? An estimate from the repo's metadata, before downloading it.

The arithmetic is app/gpu/footprint.py's, the same the model manager books when it loads the
model: weights + KV cache for ``kv_sequences`` sequences of the context (the model's own unless
capped by ``max_model_len``; sliding-window layers at their window) + engine overhead.

- weights: parameter counts per dtype from the repo's safetensors metadata (the hub's
  ``safetensors`` field, else the headers read with ``get_safetensors_metadata``); repos with
  only .bin/.pt weights are estimated from those files' sizes (the estimate says so in ``note``).
- KV cache and overhead: from config.json (see footprint.py).

The verdict (see ``place``) compares the need per device with the GPUs' free memory and total,
proposes the GPUs and the smallest tensor-parallel size the heads divide into, and, when the full
context does not fit one GPU, the longest ``max_model_len`` that does. Once the box has loaded a
model, the measured figure replaces the estimate (``basis: measured``).

GB here means GiB (1024**3 bytes), as everywhere in llmbox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from huggingface_hub import HfApi
from huggingface_hub.errors import RemoteEntryNotFoundError

from app.gpu import footprint
from app.gpu.footprint import GIB, weights_bytes
from app.hub import paths
from app.hub.errors import BadRepoId, translate
from app.hub.repo_files import read_json, weight_files

TP_SIZES = (1, 2, 4, 8, 16, 32, 64)
CONTEXT_STEP = 1024  # a proposed max_model_len is a multiple of this
MIN_CONTEXT = 2048  # no shorter context is proposed: below this, a smaller model is the better advice

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
        from app.gpu import nvml

        if nvml.detect_device(device) == "gpu":
            return cls.gpus([(name, free / GIB, total / GIB) for _, name, total, free in nvml.devices()])
        import psutil

        memory = psutil.virtual_memory()
        return cls.cpu(cpu_budget_gb or 0.75 * memory.total / GIB, memory.available / GIB)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def place(need_per_device: Callable[[int], float], host: HostMemory, sizes: tuple[int, ...] = TP_SIZES) -> dict:
    """Verdict, tensor-parallel size and GPUs for a need (bytes per device as a function of TP).

    ``fits``: that many GPUs have the need free now (the engine is told exactly its budget, and
    vLLM starts only when that much is free); ``tight``: it fits once other models are unloaded
    (within the GPUs' total); else ``does not fit``. The GPUs proposed are the ones the model
    manager would pick: the fullest that still have room (best fit). A TP size beyond this
    host's GPU count (a suggestion to use more GPUs) assumes GPUs like its largest, empty.
    """
    if not host.free_gb:
        return {"verdict": "unknown", "tensor_parallel_size": None, "enough_gpus": None, "gpus": None}
    count = len(host.free_gb) if host.kind == "gpu" else 1
    sizes = sizes if host.kind == "gpu" else (1,)

    def room(tp: int, memory: tuple[float, ...]) -> list[int] | None:
        """The ``tp`` devices (indices) with room, fullest first, or None."""
        need = need_per_device(tp) / GIB
        if tp > count:
            return None
        fitting = sorted((i for i in range(count) if memory[i] >= need), key=lambda i: (memory[i], i))
        return sorted(fitting[:tp]) if len(fitting) >= tp else None

    for verdict, memory in (("fits", host.free_gb), ("tight", host.total_gb)):
        tp = next((tp for tp in sizes if room(tp, memory) is not None), None)
        if tp is not None:
            break
    else:
        verdict = "does not fit"
        tp = next((tp for tp in sizes if need_per_device(tp) / GIB <= max(host.total_gb)), None)
    if host.kind == "cpu":  # one engine process: no tensor parallelism to suggest
        return {"verdict": verdict, "tensor_parallel_size": 1, "enough_gpus": None, "gpus": None}
    if verdict == "does not fit":  # the TP size GPUs like this host's largest would need
        big_enough = tp is not None and sum(1 for t in host.total_gb if t >= need_per_device(tp) / GIB) >= tp
        return {"verdict": verdict, "tensor_parallel_size": tp, "enough_gpus": big_enough, "gpus": None}
    gpus = room(tp, host.free_gb if verdict == "fits" else host.total_gb)
    return {"verdict": verdict, "tensor_parallel_size": tp, "enough_gpus": True, "gpus": gpus}


def _gb(value: float | None) -> float | None:
    return None if value is None else round(value / GIB, 2)


def longest_context(config: Mapping, weights: int, capacity_gb: float, kind: str, dtype: str = "auto") -> int | None:
    """The longest ``max_model_len`` (a multiple of CONTEXT_STEP, at least MIN_CONTEXT) with which
    the model fits ``capacity_gb`` on one device, or None."""
    full = footprint.model_context(config)
    if footprint.kv_bytes_per_token(config) is None:
        return None
    best = None
    context = MIN_CONTEXT
    while full is None or context < full:
        need = footprint.budget(config, weights, kind=kind, max_model_len=context, dtype=dtype).per_device / GIB
        if need > capacity_gb:
            break
        best, context = context, context + CONTEXT_STEP
    return best


def estimate(host: HostMemory, *, weights: int, config: Mapping | None, params: int | None = None,
             max_model_len: int | None = None, measured_gb: float | None = None, note: str | None = None,
             repo_id: str | None = None, revision: str | None = None,
             sequences: int = footprint.DEFAULT_SEQUENCES) -> dict:
    """The fit estimate from known numbers (see the module docstring for the record's meaning)."""
    notes = [note] if note else []
    context = kv = None
    if config is not None:
        context = footprint.model_context(config)
        if max_model_len:
            context = min(context, max_model_len) if context else max_model_len
        kv = footprint.kv_bytes(config, context, sequences) if context else None
        if kv is None:
            notes.append("config.json does not give the attention shapes or context: KV cache not counted")
    model_bytes = weights + (kv or 0)
    if measured_gb is not None:
        # The box measured the loaded model (engine overhead included): that replaces the estimate.
        need_at = lambda tp: measured_gb * GIB / tp  # noqa: E731
        overhead = None
    else:
        need_at = lambda tp: footprint.per_device_bytes(model_bytes, tp, host.kind)  # noqa: E731
        overhead = footprint.overhead_bytes(model_bytes, 1, host.kind)
    placed = place(need_at, host, footprint.tp_sizes(config, TP_SIZES))
    tp = placed["tensor_parallel_size"] or 1
    suggested = None
    if config is not None and measured_gb is None and (placed["verdict"] == "does not fit" or tp > 1):
        # A shorter context on one GPU is usually the better advice than more GPUs (a 128k
        # context's KV cache can be larger than the weights).
        suggested = longest_context(config, weights, max(host.total_gb), host.kind)
        if suggested is not None and context is not None and suggested >= context:
            suggested = None
        if suggested is not None:
            notes.append(f"fits one {'GPU' if host.kind == 'gpu' else 'engine'} with max_model_len {suggested}")
    return {
        "repo_id": repo_id, "revision": revision,
        "basis": "measured" if measured_gb is not None else "estimated",
        **placed,
        "need_gb": _gb(need_at(1)), "per_device_gb": _gb(need_at(tp)),
        "weights_gb": _gb(weights), "kv_cache_gb": _gb(kv), "overhead_gb": _gb(overhead),
        "context": context, "kv_sequences": sequences, "suggested_max_model_len": suggested,
        "params": params, "size_bytes": weights,
        "host": host.as_dict(), "note": "; ".join(notes) or None, "reason": None,
    }


def unknown(repo_id: str, revision: str | None, reason: str, host: HostMemory | None = None) -> dict:
    """The record of a repo whose metadata could not be read: same keys, verdict ``unknown``."""
    return {"repo_id": repo_id, "revision": revision, "basis": "estimated", "verdict": "unknown",
            "tensor_parallel_size": None, "enough_gpus": None, "gpus": None, "kv_sequences": None,
            "suggested_max_model_len": None, "need_gb": None, "per_device_gb": None,
            "weights_gb": None, "kv_cache_gb": None, "overhead_gb": None, "context": None, "params": None,
            "size_bytes": None, "host": host.as_dict() if host else None, "note": None, "reason": reason}


# --- through huggingface_hub -------------------------------------------------------------------------
def repo_weights(api: HfApi, info, repo_id: str, revision: str | None) -> tuple[int, int, int | None, str | None]:
    """(weight bytes as the engine holds them, bytes on disk, parameter count or None, note) of a
    repo, from model_info(files_metadata=True)."""
    counts = None
    if info.safetensors and info.safetensors.parameters:
        counts = info.safetensors.parameters
    names = [s.rfilename for s in info.siblings or []]
    if counts is None and any(n.endswith(".safetensors") for n in names):
        # The hub did not index this repo's safetensors: read the headers (HTTP Range reads).
        counts = api.get_safetensors_metadata(repo_id, revision=revision).parameter_count
    if counts is not None:
        return weights_bytes(counts), weights_bytes(counts, "float32"), sum(counts.values()), None
    files = set(weight_files(names))
    size = sum(s.size or 0 for s in info.siblings or [] if s.rfilename in files)
    if not files:
        return 0, 0, None, "no weight files found in the repo: weights not counted"
    return size, size, None, f"no safetensors: weights estimated from the sizes of {len(files)} weight file(s)"


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
        weights, size, params, note = repo_weights(api, info, repo_id, revision)
        config = None if measured_gb is not None else _config(api, repo_id, revision)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a HubError with a readable reason
        raise translate(exc, repo_id, revision) from exc
    if config is None and measured_gb is None:
        note = "; ".join(filter(None, [note, "no config.json: KV cache not counted"]))
    return {**estimate(host, weights=weights, config=config, params=params, max_model_len=max_model_len,
                       measured_gb=measured_gb, note=note, repo_id=repo_id, revision=revision), "size_bytes": size}


def _config(api: HfApi, repo_id: str, revision: str | None) -> dict | None:
    try:
        return read_json(api, repo_id, "config.json", revision)
    except RemoteEntryNotFoundError:  # e.g. GGUF-only or adapter repos
        return None
