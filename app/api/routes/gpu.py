"""/api/gpu: the GPUs through NVML, or the CPU memory budget on a host without one."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.deps import NvmlDep, ServingDep, SettingsDep
from app.gpu.memory import CpuBudget
from app.gpu.status import gpu_status

router = APIRouter(prefix="/api", tags=["gpu"])


@router.get("/gpu")
async def gpu(nvml: NvmlDep, serving: ServingDep, settings: SettingsDep) -> dict:
    """Per GPU: name, total/used/free memory, utilisation and the models placed there with their budgets."""
    status = await serving.status_or_none()
    models = status["models"] if status else []
    result = await asyncio.to_thread(gpu_status, nvml, models)
    if not result["gpu"]:
        # Not an error: this host runs models on the CPU within a memory budget.
        if status:
            budget = status["memory"]
        else:
            total = CpuBudget(settings.cpu_memory_budget_gb).budget_gb
            budget = {"total_gb": round(total, 2), "used_by_models_gb": 0.0, "free_gb": round(total, 2)}
        result["cpu_budget"] = {**budget, "models": [{"id": m["id"], "memory_gb": m["memory_gb"]}
                                                     for m in models if m["state"] == "ready"]}
    return result
