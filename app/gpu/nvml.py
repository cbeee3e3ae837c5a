"""Thin wrapper over NVML: every caller asks here, so a host without a GPU is handled once.

``module()`` is the NVML module llmbox calls: ``pynvml`` (nvidia-ml-py), or the one named by
LLMBOX_NVML_MODULE. Tests on hosts without a GPU name app.devtools.fake_nvml there, so that
every process of a test box (the model manager's actor, the API) sees the same made-up GPUs.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Literal

NVML_MODULE_VARIABLE = "LLMBOX_NVML_MODULE"
# Present while the NVIDIA kernel driver is loaded (also inside a container: it is the host's kernel).
KERNEL_DRIVER_VERSION = Path("/proc/driver/nvidia/version")


def module() -> Any:
    """The NVML module to call (pynvml unless LLMBOX_NVML_MODULE names another)."""
    return importlib.import_module(os.environ.get(NVML_MODULE_VARIABLE) or "pynvml")


def gpu_count() -> int:
    """Number of NVIDIA GPUs NVML sees; 0 when there is no driver or no GPU."""
    try:
        nvml = module()
        nvml.nvmlInit()
    except Exception:  # no libnvidia-ml.so, no driver, no device: all mean "no GPU here"
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    finally:
        nvml.nvmlShutdown()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_devices(nvml: Any) -> list[tuple[int, str, int, int]]:
    """(index, name, total bytes, free bytes) of every GPU of an initialised NVML."""
    found = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        found.append((index, text(nvml.nvmlDeviceGetName(handle)), int(memory.total), int(memory.free)))
    return found


def devices() -> list[tuple[int, str, int, int]]:
    """``read_devices`` of this host's NVML; [] without one."""
    try:
        nvml = module()
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        return read_devices(nvml)
    finally:
        nvml.nvmlShutdown()


def detect_device(setting: Literal["auto", "cpu", "gpu"] = "auto") -> Literal["cpu", "gpu"]:
    """The engine build this host runs: the setting, or auto-detected from NVML."""
    if setting != "auto":
        return setting
    return "gpu" if gpu_count() > 0 else "cpu"


def failure() -> str | None:
    """Why NVML cannot be used on this host (its own error text), or None when it initialises."""
    try:
        nvml = module()
        nvml.nvmlInit()
    except Exception as exc:  # the library's own words: "Driver/library version mismatch", ...
        return str(exc) or type(exc).__name__
    nvml.nvmlShutdown()
    return None


def check_usable(setting: Literal["auto", "cpu", "gpu"]) -> None:
    """Raise RuntimeError when this host should serve on its GPUs but NVML cannot reach them.

    Without this, ``auto`` quietly picks the CPU on a GPU host whose NVML fails, typically a
    container whose NVIDIA libraries no longer match the host's driver after a driver upgrade."""
    if setting == "cpu" or (setting == "auto" and not KERNEL_DRIVER_VERSION.exists()):
        return
    why = failure()
    if why is None:
        return
    try:
        kernel = KERNEL_DRIVER_VERSION.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        kernel = ""
    because = f"the NVIDIA kernel driver is loaded ({kernel})" if kernel else "LLMBOX_DEVICE is gpu"
    raise RuntimeError(
        f"NVIDIA's management library (NVML) fails ({why}) although {because}. After a driver upgrade on the "
        "host, the container's NVIDIA libraries must be reinstalled to match it (rerun the container play: "
        "ansible-playbook ansible/site.yml --limit llmbox); check nvidia-smi here. To serve on the CPU "
        "instead, set LLMBOX_DEVICE=cpu."
    )
