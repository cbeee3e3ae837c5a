"""A FAKE NVML for tests on hosts without a GPU: the pynvml functions llmbox calls, same names and
shapes, answering from a list of made-up devices. It stands in for the NVIDIA driver only; the
code under test (app/gpu) is the real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    total_gb: float = 80.0
    used_gb: float = 0.0
    gpu_percent: int = 0
    memory_percent: int = 0
    processes: dict[int, float] = field(default_factory=dict)  # pid -> GB used


class FakeNvml:
    """Use as the ``nvml`` module: ``gpu_status(FakeNvml([FakeGpu(...)]), models)``."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], driver: str = "580.95.05") -> None:
        self.gpus, self.driver, self.initialised = gpus, driver, 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        used = int(gpu.used_gb * GIB)
        return SimpleNamespace(total=int(gpu.total_gb * GIB), used=used, free=int(gpu.total_gb * GIB) - used)

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(gpu=gpu.gpu_percent, memory=gpu.memory_percent)

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=int(gb * GIB)) for pid, gb in gpu.processes.items()]


class NoNvml:
    """NVML on a host without the driver: nvmlInit fails the way pynvml's does."""

    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        raise NVMLError("NVML Shared Library Not Found")
