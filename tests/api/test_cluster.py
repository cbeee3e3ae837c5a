"""/api/cluster: Serve's view and the box's nodes, from the real ServingClient over a stand-in manager
handle (tests/api/fake_manager.py); without a serving plane, the API's plain 503."""

import pytest

from app.api.deps import get_serving
from app.devtools.sandbox import free_port
from tests.api.conftest import running_api
from tests.api.fake_manager import HEAD, NODES, SERVE, WORKER, ConnectedServing, manager


def no_hub() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a closed port: nothing here asks the hub


@pytest.fixture
def two_nodes(tmp_path):
    serving = ConnectedServing(manager(NODES))
    with running_api(tmp_path, no_hub(), overrides={get_serving: lambda: serving}) as api, api.client() as http:
        yield http


def test_cluster_lists_every_node_with_its_devices_and_models(two_nodes):
    response = two_nodes.get("/api/cluster")
    assert response.status_code == 200
    body = response.json()
    assert body["proxies"] == SERVE["proxies"] and body["applications"] == SERVE["applications"]  # as before
    head, worker = body["nodes"]
    assert head == HEAD and worker == WORKER  # the manager's picture, unchanged on the way
    assert [n["name"] for n in body["nodes"]] == ["head-a", "gpu-b"] and head["head"] and not worker["head"]
    assert [(d["index"], d["booked_gb"], d["room_gb"], [m["id"] for m in d["models"]]) for d in worker["devices"]] \
        == [(0, 9.75, 12.28, ["m1"]), (1, 0.0, 22.03, [])]


def test_cluster_without_a_serving_plane_is_a_plain_503(tmp_path):
    with running_api(tmp_path, no_hub()) as api, api.client() as http:
        response = http.get("/api/cluster")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "serving_unavailable"
