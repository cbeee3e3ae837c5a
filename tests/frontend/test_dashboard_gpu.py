"""GPU memory bars and TP suggestions, from the real API app whose NVML is the fake driver
(app/devtools/fake_nvml.py, as tests/api/test_gpu.py does): the only stand-in is the GPU."""

import pytest

from app.api.deps import get_nvml
from app.devtools.fake_nvml import FakeGpu, FakeNvml
from tests.api.conftest import running_api
from tests.frontend.conftest import login, ui_for


@pytest.fixture
def gpu_ui(tmp_path, hub):
    def nvml():
        return FakeNvml([FakeGpu(used_gb=20.0, gpu_percent=35), FakeGpu(name="NVIDIA L4", total_gb=24.0, used_gb=2.0)])

    with running_api(tmp_path, hub.url, overrides={get_nvml: nvml}) as api:
        yield login(ui_for(api).test_client(), api.admin)


def test_gpu_memory_bars(gpu_ui):
    html = gpu_ui.get("/").get_data(as_text=True)
    assert "<h2>GPU memory</h2>" in html and "CPU memory budget" not in html
    assert "NVIDIA H100 80GB HBM3" in html and "20.00 GB of 80.00 GB used · 60.00 GB free · 35% busy" in html
    assert '<meter min="0" max="80.0" value="20.0"' in html
    assert "NVIDIA L4" in html and '<meter min="0" max="24.0" value="2.0"' in html


def test_hub_fit_on_gpus_suggests_a_tensor_parallel_size(gpu_ui):
    html = gpu_ui.get("/hub?q=acme").get_data(as_text=True)
    assert "Fits this GPU" in html and "2 GPU(s) · NVIDIA H100 80GB HBM3 · NVIDIA L4" in html
    big = html.split('data-repo="acme/llama-70b-shaped"')[1].split("</tr>")[0]
    assert '<span class="badge bad">does not fit</span>' in big and "(more GPUs than this host has)" in big
    assert "TP 2" in big  # 76.5 GB on each of two 80 GB GPUs; this host's second GPU has 24
    small = html.split('data-repo="acme/small-chat"')[1].split("</tr>")[0]
    assert '<span class="badge ok">fits</span>' in small and "TP 1" in small
    assert "on GPU 1 (" in small  # the fuller GPU that still has room: the H100 stays free for big models
