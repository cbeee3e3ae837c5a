"""On a real NVIDIA GPU: detection and the NVML memory probe the model manager admits loads with.

Skipped, with the reason shown, on hosts without a GPU. Needs only psutil, nvidia-ml-py and
torch (to hold GPU memory in a child process), so it also runs on a bare GPU machine with
`pytest --noconftest tests/gpu`.
"""

import subprocess
import sys
import time

import pytest

from app.gpu.memory import NvmlMemory
from app.gpu.nvml import detect_device, gpu_count

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_count() == 0, reason="needs an NVIDIA GPU (NVML sees none)")]

HOLD_GB = 4
HOLDER = f"""
import sys, time, torch
x = torch.empty({HOLD_GB} * 1024**3, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
time.sleep(120)
"""


def test_the_host_is_detected_as_a_gpu_host():
    assert gpu_count() >= 1
    assert detect_device("auto") == "gpu"
    assert detect_device("cpu") == "cpu"  # the setting still wins


def free_gb(probe) -> float:
    return probe.devices()[0].free_gb


def test_nvml_sees_a_process_take_memory_and_give_it_back():
    probe = NvmlMemory()
    device = probe.devices()[0]
    total, free_before = device.total_gb, device.free_gb
    assert 0 < free_before <= total and device.name
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        held = probe.process_gb([holder.pid])  # None where NVML cannot tell (containers, MIG)
        if held is not None:
            assert HOLD_GB <= held < HOLD_GB + 2, held  # the tensor plus the CUDA context
        # What the ledger attributes by: the device's free memory before and after.
        assert free_before - free_gb(probe) >= HOLD_GB * 0.95
        print(f"\ntotal {total:.1f} GB, free {free_before:.1f} GB; the holder took {held} GB per NVML")
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 30
    while free_gb(probe) < free_before - 0.5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert free_gb(probe) >= free_before - 0.5  # freed again when the process ends
