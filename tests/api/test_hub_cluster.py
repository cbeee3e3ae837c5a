"""What fits, in a cluster: the hub's fit is judged against every node's GPUs as the manager books
them (room after bookings), not only against the NVML of the host the API runs on."""

import asyncio

from app.api.routes import hub
from app.settings import Settings
from tests.api.fake_manager import ConnectedServing, FakeManager


def row(node: str, room: float) -> dict:
    return {"node": node, "index": 0, "name": "NVIDIA L4", "total_gb": 24.0, "free_gb": room, "booked_gb": 24.0 - room,
            "room_gb": room, "models": []}


def test_a_cluster_is_judged_by_every_nodes_gpus(tmp_path):
    status = {"device": "gpu", "revision": 1, "models": [], "devices": [row("head", 2.0), row("w1", 20.0)],
              "memory": {"total_gb": 48.0, "used_by_models_gb": 26.0, "free_gb": 22.0}}
    serving = ConnectedServing(FakeManager(status=status))
    host, _ = asyncio.run(hub._host(None, serving, Settings(state_dir=tmp_path)))  # no NVML asked
    assert host.as_dict() == {"kind": "gpu", "free_gb": [2.0, 20.0], "total_gb": [24.0, 24.0],
                              "names": ["NVIDIA L4", "NVIDIA L4"]}
