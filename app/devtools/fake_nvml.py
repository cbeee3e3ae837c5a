"""A FAKE NVML for tests on hosts without a GPU: the pynvml functions llmbox calls, same names and
shapes, answering from a list of made-up devices. It stands in for the NVIDIA driver only; the
code under test (app/gpu, the model manager's ledger) is the real one.

Two ways in: ``FakeNvml([FakeGpu(...)])`` where a test hands NVML over itself, and this module
itself as the NVML module of a whole test box (LLMBOX_NVML_MODULE=app.devtools.fake_nvml), reading
its devices from the JSON file named by LLMBOX_FAKE_GPUS at every nvmlInit:
``[{"name": ..., "total_gb": 24, "used_gb": 0.5, "processes": {"<pid>": gb}}]``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

GIB = 1024**3
GPUS_VARIABLE = "LLMBOX_FAKE_GPUS"


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
    mig: bool = False  # the per-process query needs privileges a service user lacks (MIG parents)


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
        if gpu.mig:
            raise NVMLError("Insufficient Permissions")
        return [SimpleNamespace(pid=pid, usedGpuMemory=int(gb * GIB)) for pid, gb in gpu.processes.items()]


class NoNvml:
    """NVML on a host without the driver: nvmlInit fails the way pynvml's does."""

    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        raise NVMLError("NVML Shared Library Not Found")


def write_gpus(path: Path, gpus: list[FakeGpu]) -> None:
    """The devices a test box's fake NVML reports (read at each nvmlInit)."""
    path.write_text(json.dumps([{**g.__dict__, "processes": {str(p): gb for p, gb in g.processes.items()}}
                                for g in gpus]))


def _from_file() -> FakeNvml:
    path = os.environ.get(GPUS_VARIABLE)
    if not path:
        raise NVMLError(f"NVML Shared Library Not Found (fake: {GPUS_VARIABLE} is not set)")
    gpus = [FakeGpu(**{**g, "processes": {int(p): gb for p, gb in g.get("processes", {}).items()}})
            for g in json.loads(Path(path).read_text())]
    return FakeNvml(gpus)


# --- the module-level NVML of a test box (LLMBOX_NVML_MODULE=app.devtools.fake_nvml) ----------------
_current: FakeNvml | None = None


def nvmlInit() -> None:
    global _current
    _current = _from_file()


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    nvmlInit()  # every enumeration starts here: a test may have changed the file since
    return _current.nvmlDeviceGetCount()


def __getattr__(name: str):
    if name.startswith("nvml"):
        if _current is None:
            raise NVMLError("Uninitialized")
        return getattr(_current, name)
    raise AttributeError(name)
