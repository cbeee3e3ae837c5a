"""How much memory each device has and has free: NVML per GPU on GPU hosts, a budget on CPU hosts.

The model manager's ledger (app/lifecycle/admission.py) books models onto these devices; this
module only reports what the hardware (or the CPU budget) says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import psutil

from app.gpu.footprint import GIB
from app.gpu.nvml import read_devices

log = logging.getLogger("llmbox.memory")


@dataclass(frozen=True)
class Device:
    """One device a model can be placed on, as it reports itself now."""

    index: int
    name: str
    total_gb: float
    free_gb: float  # what the device has free now (NVML); a CPU budget: all of it (the ledger books the rest)
    node: str = ""  # the node it is on (app/cluster/nodes.py); "" for a probe of this machine alone


class MemoryProbe(Protocol):
    kind: Literal["cpu", "gpu"]

    def devices(self) -> list[Device]: ...
    def process_gb(self, pids: list[int], node: str = "") -> float | None: ...


def tree_pss_gb(pids: list[int]) -> float:
    """Proportional set size of these processes and all their descendants (engines included)."""
    seen: set[int] = set()
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue
    return total / GIB


class CpuBudget:
    """Hosts without a GPU: engines share one budget of RAM; a model's usage is its measured PSS."""

    kind: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, budget_gb: float | None) -> None:
        self.budget_gb = budget_gb if budget_gb else 0.75 * psutil.virtual_memory().total / GIB

    def devices(self) -> list[Device]:
        return [Device(0, "cpu", self.budget_gb, self.budget_gb)]

    def process_gb(self, pids: list[int], node: str = "") -> float | None:
        return tree_pss_gb(pids)


class NvmlMemory:
    """GPU hosts: each GPU's total and free memory as NVML reports it."""

    kind: Literal["cpu", "gpu"] = "gpu"

    def __init__(self, nvml=None) -> None:
        if nvml is None:  # tests pass app.devtools.fake_nvml.FakeNvml
            from app.gpu import nvml as wrapper

            nvml = wrapper.module()
        self._nvml = nvml
        nvml.nvmlInit()  # raises without a driver: a GPU host that cannot see its GPUs must say so

    def devices(self) -> list[Device]:
        return [Device(index, name, total / GIB, free / GIB) for index, name, total, free in read_devices(self._nvml)]

    def process_gb(self, pids: list[int], node: str = "") -> float | None:
        """GPU memory of these processes and their children, or None when NVML cannot tell.

        Optional: inside a container NVML reports host PIDs (or none), on a MIG parent the query
        needs privileges the service user lacks, and TP workers are not the replica's children.
        The ledger attributes memory by placement instead; this is a cross-check only.
        """
        wanted = set(pids)
        for pid in pids:
            try:
                wanted.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                continue
        used = 0
        try:
            for index in range(self._nvml.nvmlDeviceGetCount()):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in wanted and proc.usedGpuMemory:
                        used += proc.usedGpuMemory
        except Exception as exc:  # noqa: BLE001 - NVMLError (MIG, permissions): not knowing is fine
            log.info("NVML per-process memory unavailable: %s", exc)
            return None
        return used / GIB if used else None
