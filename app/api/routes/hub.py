"""/api/hub: search Hugging Face with a fit estimate for this host's memory."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query
from huggingface_hub import HfApi

from app.api.deps import NvmlDep, ServingDep, SettingsDep
from app.api.errors import ApiError
from app.gpu.memory import CpuBudget
from app.gpu.status import gpu_status
from app.hub import fit, search as hub_search
from app.lifecycle.measurements import Measurements
from app.hub.errors import (BadRepoId, DownloadError, GatedRepo, HubError, HubUnreachable, NotEnoughDisk,
                            RepoNotFound)

router = APIRouter(prefix="/api/hub", tags=["hub"])


def _api(settings) -> HfApi:
    token = settings.hf_token.get_secret_value() if settings.hf_token else False  # False: no stored login
    return HfApi(endpoint=settings.hf_endpoint, token=token)


async def _host(nvml, serving, settings) -> tuple[fit.HostMemory, dict[str, float]]:
    """Free memory of this host's GPUs (or CPU budget), and measured footprints by repo."""
    status = await serving.status_or_none()
    models = status["models"] if status else []
    rows = status["devices"] if status else []
    if len({d.get("node", "") for d in rows}) > 1 and status["device"] == "gpu":
        # A cluster: what fits is judged against every node's GPUs as the manager books them (NVML
        # here sees this host's only).
        return fit.HostMemory.gpus([(d["name"], d["room_gb"], d["total_gb"]) for d in rows]), \
            measured_by_repo(settings, models)
    gpus = await asyncio.to_thread(gpu_status, nvml, [m for m in models if not m.get("node") or m["node"] == _head(rows)])
    if gpus["gpu"]:
        host = fit.HostMemory.gpus([(d["name"], d["memory"]["free_gb"], d["memory"]["total_gb"])
                                    for d in gpus["devices"]])
    else:
        memory = status["memory"] if status else None
        total = memory["total_gb"] if memory else CpuBudget(settings.cpu_memory_budget_gb).budget_gb
        host = fit.HostMemory.cpu(total, memory["free_gb"] if memory else None)
    return host, measured_by_repo(settings, models)


def _head(rows: list[dict]) -> str:
    """The node this API runs on (the head: the first row of the manager's ledger)."""
    return rows[0].get("node", "") if rows else ""


def measured_by_repo(settings, models: list[dict]) -> dict[str, float]:
    """What loading each repo really took (kept across restarts by app.lifecycle.measurements)."""
    measured = Measurements(settings.state_dir).by_source()
    for m in models:
        if m.get("memory_measured") and m.get("memory_gb"):
            measured[m["source"]] = m["memory_gb"]
    return measured


@router.get("/search")
async def search(nvml: NvmlDep, serving: ServingDep, settings: SettingsDep,
                 q: str | None = Query(None, max_length=200, description="Text to search for"),
                 task: str | None = Query(None, max_length=64, pattern=r"^[a-z0-9-]+$",
                                          description="Pipeline tag, e.g. text-generation"),
                 sort: str = Query("downloads", pattern="^(downloads|likes|lastModified|trending)$"),
                 limit: int = Query(20, ge=1, le=100),
                 fits: bool = Query(False, description="Only what fits this host (fits or tight)")) -> dict:
    """Models on the hub, sorted by downloads, each with its size and fit for this host."""
    host, measured = await _host(nvml, serving, settings)
    try:
        results = await asyncio.to_thread(hub_search.search, _api(settings), text=q, task=task, sort=sort,
                                          limit=limit, host=host, fits_only=fits, measured=measured)
    except HubError as exc:
        raise hub_error(exc) from None
    return {"host": host.as_dict(), "results": results}


@router.get("/models/{org}/{name}/fit")
async def repo_fit(org: str, name: str, nvml: NvmlDep, serving: ServingDep, settings: SettingsDep,
                   revision: str = Query("main", max_length=128),
                   context: int | None = Query(None, ge=16, le=10_000_000)) -> dict:
    """The fit estimate of one repo: weights + KV cache + overhead against this host's free memory."""
    host, measured = await _host(nvml, serving, settings)
    try:
        return await asyncio.to_thread(fit.estimate_repo, _api(settings), f"{org}/{name}", revision, host,
                                       measured.get(f"{org}/{name}"), context)
    except HubError as exc:
        raise hub_error(exc) from None


def hub_error(exc: HubError) -> ApiError:
    """A hub failure as the status a client can act on (one mapping for search, fit and downloads)."""
    for kind, status, code in ((BadRepoId, 400, "invalid_repo"), (RepoNotFound, 404, "repo_not_found"),
                               (GatedRepo, 403, "repo_gated"), (NotEnoughDisk, 507, "not_enough_disk"),
                               (HubUnreachable, 503, "hub_unavailable")):
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(400, "download_refused" if isinstance(exc, DownloadError) else "hub_error", str(exc))
