"""The model manager actor as the API reaches it: the real ``ServingClient`` over a stand-in handle.

``ServingClient.call`` awaits ``handle.<method>.remote(*args)``; ``FakeManager`` answers those with
canned data shaped like the manager's (app/lifecycle/manager.py ``status``/``cluster``,
app/lifecycle/nodes.py ``nodes``), so a route's own code and the client's error handling both run.
A method it has no answer for fails as a Ray call would (the client says 503 serving_unavailable).
"""

from __future__ import annotations

from typing import Any

from app.api.serving_client import ServingClient


class _Method:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def remote(self, *args: Any) -> Any:
        return self.answer


class FakeManager:
    """A manager handle whose methods answer ``answers[method]``."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers

    def __getattr__(self, method: str) -> _Method:
        if method not in self.answers:
            raise AttributeError(f"the fake manager has no answer for {method}")
        return _Method(self.answers[method])


class ConnectedServing(ServingClient):
    """A ServingClient already connected to ``manager`` (for ``dependency_overrides[get_serving]``)."""

    def __init__(self, manager: FakeManager) -> None:
        super().__init__(settings=None)  # settings only say how to connect, which this client never does
        self.manager = manager

    async def _manager(self):
        return self.manager


def device(node: str, index: int, name: str, total_gb: float, free_gb: float, models: list[dict]) -> dict:
    """One row of a node's devices, as ``nodes()`` books it."""
    booked = round(sum(m["budget_gb"] for m in models), 2)
    return {"node": node, "index": index, "name": name, "total_gb": total_gb, "free_gb": free_gb,
            "booked_gb": booked, "room_gb": round(total_gb - booked, 2), "models": models}


HEAD = {"name": "head-a", "address": "10.0.0.1", "head": True, "alive": True, "leaving": False, "death": "",
        "devices": [device("head-a", 0, "NVIDIA H100 80GB HBM3", 79.19, 50.1,
                           [{"id": "m0", "state": "ready", "budget_gb": 28.5}])],
        "models": ["m0"]}
WORKER = {"name": "gpu-b", "address": "10.0.0.2", "head": False, "alive": True, "leaving": False, "death": "",
          "devices": [device("gpu-b", 0, "NVIDIA L4", 22.03, 12.0, [{"id": "m1", "state": "ready", "budget_gb": 9.75}]),
                      device("gpu-b", 1, "NVIDIA L4", 22.03, 22.0, [])],
          "models": ["m1"]}
NODES = [HEAD, WORKER]  # head first, as the manager lists them
LEAVING = {"name": "gpu-c", "address": "10.0.0.3", "head": False, "alive": True, "leaving": True, "death": "",
           "devices": [device("gpu-c", 0, "NVIDIA L4", 22.03, 22.0, [])], "models": []}
LOST = {"name": "gpu-d", "address": "10.0.0.4", "head": False, "alive": False, "leaving": False,
        "death": "The node was terminated: its raylet missed heartbeats for 30 s", "devices": [], "models": []}


def view(model_id: str, node: str, gpus: list[int], budget_gb: float, memory_gb: float) -> dict:
    """A READY model's view as the manager's ``status`` shows it (the keys the API and UI read)."""
    return {"id": model_id, "state": "ready", "since": 0.0, "in_flight": 0, "last_used": None,
            "memory_gb": memory_gb, "memory_measured": True, "last_load_s": 41.0, "last_error": None,
            "pids": [4242], "gpus": gpus, "node": node, "budget_gb": budget_gb}


def status(nodes: list[dict]) -> dict:
    """The manager's ``status`` over the same nodes: every device row, and m0 on the head, m1 on the worker."""
    rows = [d for n in nodes for d in n["devices"]]
    return {"revision": 0, "device": "gpu",
            "memory": {"total_gb": round(sum(d["total_gb"] for d in rows), 2),
                       "used_by_models_gb": round(sum(d["booked_gb"] for d in rows), 2),
                       "free_gb": round(sum(d["room_gb"] for d in rows), 2)},
            "devices": rows,
            "models": [view("m0", "head-a", [0], 28.5, 28.0), view("m1", "gpu-b", [0], 9.75, 9.5)]}


SERVE = {"proxies": {}, "applications": {
    "m0": {"status": "RUNNING", "message": "", "deployments": {
        "LLMServer:m0": {"status": "HEALTHY", "replicas": {"RUNNING": 1}, "message": ""}}},
    "m1": {"status": "RUNNING", "message": "", "deployments": {
        "LLMServer:m1": {"status": "HEALTHY", "replicas": {"RUNNING": 1}, "message": ""}}}}}


def manager(nodes: list[dict] = NODES) -> FakeManager:
    """A manager of a box with ``nodes``, serving m0 on the head and m1 on the worker."""
    return FakeManager(status=status(nodes), cluster=SERVE, nodes=nodes)
