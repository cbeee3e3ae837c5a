"""How much memory models use and how much is free: NVML on GPU hosts, a budget on CPU hosts."""

from __future__ import annotations

from typing import Protocol

import psutil

GIB = 1024**3


class MemoryProbe(Protocol):
    def free_gb(self, held_gb: float, coming_gb: float) -> float:
        """Memory a new model may take, given what loaded models hold and loading ones will take."""
    def total_gb(self) -> float: ...
    def process_gb(self, pids: list[int]) -> float: ...


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
    """Hosts without a GPU: engines may use a fixed budget of RAM; usage is measured PSS."""

    def __init__(self, budget_gb: float | None) -> None:
        self.budget_gb = budget_gb if budget_gb else 0.75 * psutil.virtual_memory().total / GIB

    def total_gb(self) -> float:
        return self.budget_gb

    def free_gb(self, held_gb: float, coming_gb: float) -> float:
        return self.budget_gb - held_gb - coming_gb

    def process_gb(self, pids: list[int]) -> float:
        return tree_pss_gb(pids)


class NvmlMemory:
    """GPU hosts: free memory as NVML reports it, summed over the GPUs."""

    def __init__(self, nvml=None) -> None:
        if nvml is None:  # tests pass app.devtools.fake_nvml.FakeNvml
            import pynvml as nvml
        self._nvml = nvml
        nvml.nvmlInit()
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def total_gb(self) -> float:
        return sum(self._nvml.nvmlDeviceGetMemoryInfo(h).total for h in self._handles) / GIB

    def free_gb(self, held_gb: float, coming_gb: float) -> float:
        # NVML already sees what loaded engines hold, but not (all of) what loading ones will take.
        return sum(self._nvml.nvmlDeviceGetMemoryInfo(h).free for h in self._handles) / GIB - coming_gb

    def process_gb(self, pids: list[int]) -> float:
        wanted = set(pids)
        for pid in pids:
            try:
                wanted.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                continue
        used = 0
        for handle in self._handles:
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in wanted and proc.usedGpuMemory:
                    used += proc.usedGpuMemory
        return used / GIB
