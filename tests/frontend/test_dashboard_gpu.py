"""GPU memory bars and TP suggestions, from the real API app whose NVML is the fake driver
(app/devtools/fake_nvml.py, as tests/api/test_gpu.py does): the only stand-in is the GPU."""

import threading
import time

import pytest
import uvicorn

from app.api.app import create_app as create_api
from app.api.deps import get_nvml
from app.api.tokens import TokenFile
from app.devtools.fake_nvml import FakeGpu, FakeNvml
from app.devtools.sandbox import free_port
from app.registry.store import RegistryStore
from app.settings import Settings
from frontend import create_app
from tests.api.conftest import REGISTRY
from tests.frontend.conftest import login


@pytest.fixture(scope="module")
def gpu_ui(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("gpu-api")
    settings = Settings(state_dir=base / "var", models_dir=base / "models", registry_path=base / "inv" / "models.yml",
                        api_port=free_port(), ray_port=free_port(), hf_endpoint=hub.url)
    RegistryStore(settings.registry_path).create(REGISTRY)
    token = TokenFile(settings.admin_tokens_path).add("gpu-admin")
    api = create_api(settings)
    api.dependency_overrides[get_nvml] = lambda: FakeNvml([FakeGpu(used_gb=20.0, gpu_percent=35),
                                                           FakeGpu(name="NVIDIA L4", total_gb=24.0, used_gb=2.0)])
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=settings.api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    app = create_app({"API_URL": f"http://127.0.0.1:{settings.api_port}", "SECRET_KEY": "g" * 40})
    try:
        yield login(app.test_client(), token)
    finally:
        server.should_exit = True
        thread.join(10)


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
    assert "TP 4" in big
    small = html.split('data-repo="acme/small-chat"')[1].split("</tr>")[0]
    assert '<span class="badge ok">fits</span>' in small and "TP 1" in small
