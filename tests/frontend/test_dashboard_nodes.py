"""The dashboard's Nodes panel, from the real API app whose serving client is the real ServingClient
over a stand-in manager handle (tests/api/fake_manager.py): a head, a worker with a model, a node
leaving and one lost. NVML is the fake driver (this host: one GPU)."""

import re
from html import unescape

import pytest

from app.api.deps import get_nvml, get_serving
from app.devtools.fake_nvml import FakeGpu, FakeNvml
from tests.api.conftest import running_api
from tests.api.fake_manager import LEAVING, LOST, NODES, ConnectedServing, manager
from tests.frontend.conftest import login, ui_for


@pytest.fixture
def cluster_ui(tmp_path, hub):
    serving = ConnectedServing(manager([*NODES, LEAVING, LOST]))
    overrides = {get_serving: lambda: serving, get_nvml: lambda: FakeNvml([FakeGpu(used_gb=30.0)])}
    with running_api(tmp_path, hub.url, overrides=overrides) as api:
        yield login(ui_for(api).test_client(), api.admin)


def node_rows(html: str, name: str) -> list[str]:
    """The text of each row of node ``name`` in the Nodes table, whitespace collapsed."""
    body = html.split(f'<tbody data-node="{name}">')[1].split("</tbody>")[0]
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", row)).split()) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.mark.parametrize("url", ["/", "/dashboard/live"])
def test_dashboard_lists_every_node_with_its_devices_and_models(cluster_ui, url):
    html = cluster_ui.get(url, headers={"X-Requested-With": "llmbox-ui"}).get_data(as_text=True)
    assert "<h2>Nodes</h2>" in html and 'id="nodes"' in html
    assert re.findall(r'<tbody data-node="([^"]+)">', html) == ["head-a", "gpu-b", "gpu-c", "gpu-d"]  # head first
    assert node_rows(html, "head-a") == [
        "head-a head 10.0.0.1 alive GPU 0 · NVIDIA H100 80GB HBM3 28.50 GB of 79.19 GB 50.69 GB m0 ready, 28.50 GB"]
    assert node_rows(html, "gpu-b") == [
        "gpu-b 10.0.0.2 alive GPU 0 · NVIDIA L4 9.75 GB of 22.03 GB 12.28 GB m1 ready, 9.75 GB",  # the worker's model
        "GPU 1 · NVIDIA L4 0.00 GB of 22.03 GB 22.03 GB none"]
    assert node_rows(html, "gpu-c") == ["gpu-c 10.0.0.3 leaving GPU 0 · NVIDIA L4 0.00 GB of 22.03 GB 22.03 GB none"]
    assert node_rows(html, "gpu-d") == ["gpu-d 10.0.0.4 lost The node was terminated: its raylet missed heartbeats "
                                        "for 30 s no devices: the node is gone"]
    assert '<span class="badge bad">lost</span>' in html and '<span class="badge warn">leaving</span>' in html
    # The GPU panel is this host's: the worker's m1 (on its own GPU 0) is not on this host's GPU 0.
    gpu_panel = html.split("<h2>GPU memory</h2>")[1].split("</section>")[0]
    assert "m0 (budget 28.50 GB, uses 28.00 GB)" in gpu_panel and "m1" not in gpu_panel


def test_without_a_serving_plane_there_is_no_nodes_panel(admin):
    html = admin.get("/").get_data(as_text=True)
    assert "<h2>Nodes</h2>" not in html and "the serving plane is not running: run ./start.sh" in html
