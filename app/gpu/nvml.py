"""Thin wrapper over NVML: every caller asks here, so a host without a GPU is handled once."""

from __future__ import annotations

from typing import Literal


def gpu_count() -> int:
    """Number of NVIDIA GPUs NVML sees; 0 when there is no driver or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no libnvidia-ml.so, no driver, no device: all mean "no GPU here"
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def detect_device(setting: Literal["auto", "cpu", "gpu"] = "auto") -> Literal["cpu", "gpu"]:
    """The engine build this host runs: the setting, or auto-detected from NVML."""
    if setting != "auto":
        return setting
    return "gpu" if gpu_count() > 0 else "cpu"
