"""/api/gpu: this host's GPUs through NVML (or the CPU memory budget on a host without one), and
every node of the box with its devices, budgets and models as the model manager books them."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.deps import NvmlDep, ServingDep, SettingsDep
from app.api.errors import ApiError
from app.gpu.memory import CpuBudget
from app.gpu.status import gpu_status

router = APIRouter(prefix="/api", tags=["gpu"])
READ_TIMEOUT_S = 5.0  # a read view: without an answer by then the host's own part is still worth showing


async def _nodes(serving) -> list | None:
    """The manager's per-node picture, or None when the serving plane is down."""
    try:
        return await serving.call("nodes", timeout_s=READ_TIMEOUT_S)
    except ApiError:
        return None


def _here(nodes: list | None, settings) -> str:
    """This host's node name: the API runs on the head."""
    return next((n["name"] for n in nodes or [] if n["head"]), settings.node_name)


@router.get("/gpu")
async def gpu(nvml: NvmlDep, serving: ServingDep, settings: SettingsDep) -> dict:
    """Per GPU of this host: name, total/used/free memory, utilisation and the models placed there with
    their budgets; ``nodes``: each node of the box (head first) with its devices, what is booked there and
    its models. Without a serving plane this host's part still answers and ``nodes`` is absent."""
    status, nodes = await asyncio.gather(serving.status_or_none(), _nodes(serving))
    models = status["models"] if status else []
    here = _here(nodes, settings)
    # NVML sees this host only; another node's GPU 0 is not this one's (a model placed nowhere has no gpus).
    local = [m for m in models if m.get("node", "") in ("", here)]
    result = await asyncio.to_thread(gpu_status, nvml, local)
    if not result["gpu"]:
        # Not an error: this box runs models on the CPU within a memory budget (all its nodes together).
        if status:
            budget = status["memory"]
        else:
            total = CpuBudget(settings.cpu_memory_budget_gb).budget_gb
            budget = {"total_gb": round(total, 2), "used_by_models_gb": 0.0, "free_gb": round(total, 2)}
        result["cpu_budget"] = {**budget, "models": [{"id": m["id"], "memory_gb": m["memory_gb"]}
                                                     for m in models if m["state"] == "ready"]}
    if nodes is not None:
        result["nodes"] = nodes
    return result
