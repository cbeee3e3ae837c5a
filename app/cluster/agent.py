"""The node agent: one Ray actor pinned to each node of the box, the manager's eyes there.

The manager runs on the head; engines may run on any node. What only the node itself can see goes
through its agent: its devices' memory (NVML per GPU, or its CPU budget), the memory its engine
processes take (PSS on CPU nodes), and whether the processes a model runs in are still alive.
Named ``llmbox-agent-<node>``, detached (a restarted manager finds it again), pinned to its node
with a hard node affinity, so it dies with its node and never moves.
"""

from __future__ import annotations

from typing import Any

import psutil

from app.gpu.memory import CpuBudget, Device, NvmlMemory

ACTOR_PREFIX = "llmbox-agent-"


def process_alive(pid: int, create_time: float) -> bool:
    """The process runs and is the one recorded (a reused pid has another start time)."""
    try:
        found = psutil.Process(pid)
        return abs(found.create_time() - create_time) < 1.0 and found.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class NodeAgent:
    """Runs on its node; every method answers from there."""

    def __init__(self, node: str, device: str, cpu_budget_gb: float | None) -> None:
        self.node = node
        self.memory = NvmlMemory() if device == "gpu" else CpuBudget(cpu_budget_gb)

    def devices(self) -> list[Device]:
        return [Device(d.index, d.name, d.total_gb, d.free_gb, self.node) for d in self.memory.devices()]

    def process_gb(self, pids: list[int]) -> float | None:
        return self.memory.process_gb(pids)

    def alive(self, processes: list[tuple[int, float]]) -> list[bool]:
        return [process_alive(pid, created) for pid, created in processes]

    def ping(self) -> dict[str, Any]:
        import os

        return {"node": self.node, "pid": os.getpid()}


def spawn(node_name: str, node_id: str, device: str, cpu_budget_gb: float | None):
    """The agent of this node (created on it if it has none); its handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from app.ray_head import NAMESPACE

    return ray.remote(NodeAgent).options(
        name=f"{ACTOR_PREFIX}{node_name}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=16, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(node_name, device, cpu_budget_gb)
