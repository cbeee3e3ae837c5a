"""On a real NVIDIA GPU: the management API's GPU status through the real NVML (nvidia-ml-py).

A child process (standing in for a model's replica) starts a grandchild that holds GPU memory
with torch, as a vLLM engine under a Serve replica does; the status must name the device, see the
memory in use, list the model the manager placed there, and count the rest as other processes.
Skipped, with the reason shown, on hosts without a GPU.
"""

import os
import signal
import subprocess
import sys
import time

import pynvml
import pytest

from app.gpu.nvml import gpu_count
from app.gpu.status import gpu_status

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_count() == 0, reason="needs an NVIDIA GPU (NVML sees none)")]

REPLICA = """
import subprocess, sys, time
engine = subprocess.Popen([sys.executable, "-c", '''
import time, torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
time.sleep(120)
'''], stdout=sys.stdout)
time.sleep(120)
"""


def _wait_until_freed(used_gb: float, timeout_s: float = 30) -> None:
    """The driver frees a killed process's memory a moment later: leave the GPU as we found it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and gpu_status(pynvml, [])["devices"][0]["memory"]["used_gb"] > used_gb + 0.5:
        time.sleep(0.2)


def test_devices_memory_and_the_model_holding_it():
    empty = gpu_status(pynvml, [])
    assert empty["gpu"] is True and empty["driver"]
    device = empty["devices"][0]
    assert "NVIDIA" in device["name"] or device["name"]
    assert device["memory"]["total_gb"] > 1 and device["memory"]["free_gb"] <= device["memory"]["total_gb"]
    replica = subprocess.Popen([sys.executable, "-c", REPLICA], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert replica.stdout.readline().strip() == "ready"
        status = gpu_status(pynvml, [{"id": "holder", "gpus": [0], "budget_gb": 2.5, "memory_measured": False,
                                      "memory_gb": None, "pids": [replica.pid]}])
    finally:
        os.killpg(replica.pid, signal.SIGKILL)  # the replica and its engine
        replica.wait()
        _wait_until_freed(device["memory"]["used_gb"])
    print(status)
    held = {m["id"]: m["budget_gb"] for m in status["devices"][0]["models"]}
    assert held == {"holder": 2.5}
    assert status["devices"][0]["memory"]["used_gb"] >= device["memory"]["used_gb"] + 2.0
