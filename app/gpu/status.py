"""What the GPUs hold: per device name, memory, utilisation, and which model is placed there with what.

``nvml`` is the ``pynvml`` module (nvidia-ml-py) or anything with the same functions (the tests
pass app/devtools/fake_nvml.py). A host without a GPU is not an error: the answer says so and
the caller reports the CPU memory budget instead.

Models are attributed by where the model manager placed them (each model's ``gpus`` and its
``budget_gb`` on each), not by process id: inside a container NVML reports host PIDs (or none),
tensor-parallel workers are not the replica's children, and on a MIG parent the per-process
query needs privileges the service user lacks. ``other_processes_gb`` is what NVML says is used
beyond what llmbox's models hold (another container, a desktop, a model still allocating).
"""

from __future__ import annotations

from typing import Any

from app.gpu.footprint import GIB
from app.gpu.nvml import text as _text


def holdings(models: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """The models placed on GPU ``index``: what each was given there, and measured (per GPU) if known."""
    held = []
    for model in models:
        gpus = model.get("gpus") or []
        if index not in gpus:
            continue
        measured = model.get("memory_gb") if model.get("memory_measured") else None
        held.append({"id": model["id"], "state": model.get("state"), "budget_gb": model.get("budget_gb"),
                     "memory_gb": round(measured / len(gpus), 2) if measured else model.get("budget_gb"),
                     "gpus": gpus})
    return sorted(held, key=lambda m: m["id"])


def gpu_status(nvml: Any, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Every GPU with its memory, utilisation and the models on it; ``{"gpu": False, ...}`` without one."""
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver library, no device, no permission: all mean "no GPU here"
        return {"gpu": False, "message": f"no NVIDIA GPU on this host (NVML: {_text(exc) or type(exc).__name__})"}
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                utilisation = {"gpu_percent": rates.gpu, "memory_percent": rates.memory}
            except Exception:  # some GPUs (MIG slices) do not report utilisation
                utilisation = {"gpu_percent": None, "memory_percent": None}
            held = holdings(models, index)
            ours = sum(m["memory_gb"] or 0.0 for m in held)
            devices.append({
                "index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
                "memory": {"total_gb": round(memory.total / GIB, 2), "used_gb": round(memory.used / GIB, 2),
                           "free_gb": round(memory.free / GIB, 2)},
                **utilisation,
                "models": held,
                "other_processes_gb": round(max(memory.used / GIB - ours, 0.0), 2),
            })
        return {"gpu": True, "driver": _text(nvml.nvmlSystemGetDriverVersion()), "devices": devices}
    finally:
        nvml.nvmlShutdown()
