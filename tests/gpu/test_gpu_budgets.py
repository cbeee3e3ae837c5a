"""On a real NVIDIA GPU with the CUDA vLLM build: two models share one GPU, each within its budget,
and an unload gives the memory back. Skipped, with the reason, anywhere else (this machine has
neither a GPU nor the CUDA build; tests/integration/test_gpu_placement.py covers the placement
with Ray's logical GPUs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from app.devtools.sandbox import control, ensure_ready, make_box, running, tiny_entry
from app.gpu.memory import NvmlMemory
from app.gpu.nvml import gpu_count


def _cuda_vllm() -> bool:
    try:
        from vllm.platforms import current_platform
    except Exception:  # noqa: BLE001 - no vLLM at all
        return False
    return current_platform.is_cuda()


pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(gpu_count() == 0, reason="needs an NVIDIA GPU (NVML sees none)"),
              pytest.mark.skipif(gpu_count() > 0 and not _cuda_vllm(), reason="needs vLLM's CUDA build")]


def entry(model_id: str) -> str:
    # The budget comes from the files: no memory_gb, and the tiny model runs in 16 bits on a GPU.
    return tiny_entry(model_id, Path("{tiny}")).replace("      memory_gb: 2.3\n", "").replace(
        "dtype: float32, ", "")


def used_gb(probe: NvmlMemory) -> float:
    device = probe.devices()[0]
    return device.total_gb - device.free_gb


def test_two_models_share_a_gpu_within_their_budgets_and_eviction_frees_it():
    base = Path("/tmp") / f"lbgpu{os.getpid()}"
    settings = make_box(base, entry("one") + entry("two"), device="gpu", load_timeout_s=600)
    probe = NvmlMemory()
    with running(settings):
        url = f"http://127.0.0.1:{settings.serve_port}"
        idle = used_gb(probe)
        taken = {}
        for model in ("one", "two"):
            before = used_gb(probe)
            ensure_ready(url, model, settings)
            taken[model] = used_gb(probe) - before
        cards = {m["id"]: m for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        for model in ("one", "two"):
            assert cards[model]["state"] == "ready" and cards[model]["gpus"] == [0]
            budget = cards[model]["budget_gb"]
            assert abs(taken[model] - budget) <= 0.1 * budget, (model, taken[model], budget)
        for model in ("one", "two"):
            httpx.post(f"{url}/models/unload", json={"model": model}, headers=control(settings), timeout=300).raise_for_status()
        deadline = time.monotonic() + 30
        while used_gb(probe) > idle + 0.5 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert used_gb(probe) <= idle + 0.5  # the GPU is as it was before the loads
