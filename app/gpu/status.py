"""What the GPUs hold: per device name, memory, utilisation, and which model owns which process.

``nvml`` is the ``pynvml`` module (nvidia-ml-py) or anything with the same functions (the tests
pass app/devtools/fake_nvml.py). A host without a GPU is not an error: the answer says so and
the caller reports the CPU memory budget instead.
"""

from __future__ import annotations

from typing import Any

import psutil

GIB = 1024**3


def process_owners(models: list[dict[str, Any]]) -> dict[int, str]:
    """PID -> model id for every model's replica processes and their children (the engines)."""
    owners: dict[int, str] = {}
    for model in models:
        for pid in model.get("pids") or []:
            owners[pid] = model["id"]
            try:
                for child in psutil.Process(pid).children(recursive=True):
                    owners[child.pid] = model["id"]
            except psutil.Error:
                continue
    return owners


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_status(nvml: Any, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Every GPU with its memory, utilisation and the models on it; ``{"gpu": False, ...}`` without one."""
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver library, no device, no permission: all mean "no GPU here"
        return {"gpu": False, "message": f"no NVIDIA GPU on this host (NVML: {_text(exc) or type(exc).__name__})"}
    try:
        owners = process_owners(models)
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                utilisation = {"gpu_percent": rates.gpu, "memory_percent": rates.memory}
            except Exception:  # some GPUs (MIG slices) do not report utilisation
                utilisation = {"gpu_percent": None, "memory_percent": None}
            holders: dict[str, float] = {}
            others = 0.0
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = (proc.usedGpuMemory or 0) / GIB
                if proc.pid in owners:
                    holders[owners[proc.pid]] = holders.get(owners[proc.pid], 0.0) + used
                else:
                    others += used
            devices.append({
                "index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
                "memory": {"total_gb": round(memory.total / GIB, 2), "used_gb": round(memory.used / GIB, 2),
                           "free_gb": round(memory.free / GIB, 2)},
                **utilisation,
                "models": [{"id": m, "memory_gb": round(gb, 2)} for m, gb in sorted(holders.items())],
                "other_processes_gb": round(others, 2),
            })
        return {"gpu": True, "driver": _text(nvml.nvmlSystemGetDriverVersion()), "devices": devices}
    finally:
        nvml.nvmlShutdown()
