"""The whole cluster as the manager's memory probe: every node's devices, through its agent.

The manager (app/lifecycle) asks this what a single-box probe (app/gpu/memory.py) answers for one
machine, for all nodes at once: each live node's devices (tagged with the node's name), the memory
of a model's processes on its node, and which of its processes are alive. A node whose agent does
not answer in time has no devices for that call (nothing is placed on it); a node Ray marks dead
is reported by ``nodes`` and the manager unloads what it held (app/lifecycle/watchdog.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from app.cluster import agent, nodes
from app.cluster.nodes import Node
from app.gpu.memory import Device

log = logging.getLogger("llmbox.cluster")
ANSWER_S = 10.0  # an agent that takes longer (a node going away, a first start) is left out this time


class ClusterMemory:
    def __init__(self, kind: Literal["cpu", "gpu"]) -> None:
        self.kind = kind
        self._agents: dict[str, object] = {}  # Ray node id -> its agent's handle
        self._lock = threading.Lock()  # callers run in threads (asyncio.to_thread)

    def nodes(self) -> list[Node]:
        """The box's nodes now; every live one has an agent."""
        found = nodes.read()
        with self._lock:
            for node in found:
                if node.alive and node.node_id not in self._agents:
                    self._agents[node.node_id] = agent.spawn(node.name, node.node_id, self.kind, node.cpu_budget_gb)
            for node_id in set(self._agents) - {n.node_id for n in found if n.alive}:
                del self._agents[node_id]
        return found

    def _agent(self, node: str):
        live = {n.name: n.node_id for n in self.nodes() if n.alive}
        return self._agents.get(live.get(node, ""))

    def devices(self) -> list[Device]:
        import ray

        live = [n for n in self.nodes() if n.alive]
        asked = {n.name: self._agents[n.node_id].devices.remote() for n in live if n.node_id in self._agents}
        ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=ANSWER_S)
        found: list[Device] = []
        for name, ref in asked.items():
            if ref not in ready:
                log.warning("the agent of node %s did not answer within %.0f s: nothing goes there now", name, ANSWER_S)
                continue
            try:
                found += ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a node going away: leave it out
                log.warning("the agent of node %s failed: %s", name, exc)
        return found

    def process_gb(self, pids: list[int], node: str = "") -> float | None:
        import ray

        handle = self._agent(node)
        if handle is None:
            return None
        try:
            return ray.get(handle.process_gb.remote(pids), timeout=ANSWER_S)
        except Exception as exc:  # noqa: BLE001 - not measured: the budget counts
            log.info("could not measure on node %s: %s", node, exc)
            return None

    def alive(self, node: str, processes: list[tuple[int, float]]) -> list[bool] | None:
        """Which of these processes on ``node`` run; None when its agent cannot say (node lost or slow)."""
        import ray

        handle = self._agent(node)
        if handle is None:
            return None
        try:
            return ray.get(handle.alive.remote(processes), timeout=ANSWER_S)
        except Exception as exc:  # noqa: BLE001 - the node is going away, or busy: ask again next tick
            log.info("the agent of node %s did not answer: %s", node, exc)
            return None
