"""GPU status: the real no-GPU path on this machine, and the GPU path against a FAKE NVML (same
interface as pynvml) with models attributed by where the manager placed them."""

from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.deps import get_nvml, get_serving
from app.devtools.fake_nvml import FakeGpu, FakeNvml, NoNvml
from app.devtools.sandbox import free_port
from app.gpu.status import gpu_status
from app.settings import Settings


class ServingStub:
    """The manager's status as the API sees it (the serving plane itself is tested elsewhere)."""

    def __init__(self, models):
        self.models = models

    async def status_or_none(self):
        return {"models": self.models, "memory": {"total_gb": 16.0, "used_by_models_gb": 2.0, "free_gb": 14.0}}


def client(tmp_path, nvml, models):
    settings = Settings(state_dir=tmp_path / "var", models_dir=tmp_path / "models", registry_path=tmp_path / "m.yml",
                        cpu_memory_budget_gb=16, hf_endpoint=f"http://127.0.0.1:{free_port()}")  # no hub: a closed port
    app = create_app(settings)
    app.dependency_overrides[get_nvml] = lambda: nvml
    app.dependency_overrides[get_serving] = lambda: ServingStub(models)
    return TestClient(app, base_url="http://127.0.0.1")


def test_this_host_without_a_gpu_says_so_and_reports_the_cpu_budget(tmp_path):
    import pynvml  # the real nvidia-ml-py: no driver on this machine

    models = [{"id": "embed", "state": "ready", "memory_gb": 1.3, "pids": []}]
    with client(tmp_path, pynvml, models) as c:
        body = c.get("/api/gpu").json()
    assert body["gpu"] is False and body["message"].startswith("no NVIDIA GPU on this host")
    assert body["cpu_budget"]["total_gb"] == 16.0 and body["cpu_budget"]["models"] == [{"id": "embed", "memory_gb": 1.3}]


def test_gpu_path_names_devices_memory_and_which_model_is_placed_where(tmp_path):
    # Inside a container NVML reports host PIDs (here: pids llmbox never heard of), and the MIG
    # parent refuses the per-process query: models are attributed by placement, never by PID.
    nvml = FakeNvml([FakeGpu(used_gb=30.5, gpu_percent=87, processes={4242: 28.0, 99999: 2.5}),
                     FakeGpu(name="NVIDIA L4", total_gb=24.0, used_gb=14.0, mig=True),
                     FakeGpu(name="NVIDIA L4", total_gb=24.0, used_gb=10.0)])
    models = [{"id": "llama", "state": "ready", "memory_gb": 28.0, "memory_measured": True, "gpus": [0],
               "budget_gb": 28.5, "pids": [123]},
              {"id": "qwen-tp2", "state": "ready", "memory_gb": None, "memory_measured": False, "gpus": [1, 2],
               "budget_gb": 10.0, "pids": [456]},
              {"id": "idle", "state": "unloaded", "memory_gb": 3.0, "memory_measured": True, "gpus": [],
               "budget_gb": None, "pids": []}]
    with client(tmp_path, nvml, models) as c:
        response = c.get("/api/gpu")
    assert response.status_code == 200
    first, second, third = response.json()["devices"]
    assert response.json()["gpu"] is True and response.json()["driver"] == "580.95.05"
    assert first["name"] == "NVIDIA H100 80GB HBM3" and first["gpu_percent"] == 87
    assert first["memory"] == {"total_gb": 80.0, "used_gb": 30.5, "free_gb": 49.5}
    assert first["models"] == [{"id": "llama", "state": "ready", "budget_gb": 28.5, "memory_gb": 28.0, "gpus": [0]}]
    assert first["other_processes_gb"] == 2.5
    # A TP model is listed on each of its GPUs with its share there.
    assert [m["id"] for m in second["models"]] == [m["id"] for m in third["models"]] == ["qwen-tp2"]
    assert second["models"][0]["memory_gb"] == 10.0 and second["other_processes_gb"] == 4.0
    assert nvml.initialised == 0  # every nvmlInit was matched by nvmlShutdown


def test_a_missing_driver_is_a_plain_answer_not_an_error():
    assert gpu_status(NoNvml(), []) == {"gpu": False, "message": "no NVIDIA GPU on this host "
                                                                 "(NVML: NVML Shared Library Not Found)"}
