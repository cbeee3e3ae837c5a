"""GPU status: the real no-GPU path on this machine, and the GPU path against a FAKE NVML (same
interface as pynvml) with models attributed by where the manager placed them; the manager is the real
ServingClient over a stand-in handle (tests/api/fake_manager.py), or no serving plane at all."""

from fastapi.testclient import TestClient

from app.api.app import create_app
from app.api.deps import get_nvml, get_serving
from app.devtools.fake_nvml import FakeGpu, FakeNvml, NoNvml
from app.devtools.sandbox import free_port
from app.gpu.status import gpu_status
from app.settings import Settings
from tests.api.fake_manager import NODES, ConnectedServing, FakeManager, manager


def single_box(models):
    """A manager of one box that answers ``status`` only (the serving plane itself is tested elsewhere)."""
    return FakeManager(status={"models": models, "memory": {"total_gb": 16.0, "used_by_models_gb": 2.0,
                                                            "free_gb": 14.0}})


def client(tmp_path, nvml, serving=None):
    """The API with ``nvml`` whose manager is ``serving`` (a FakeManager); None: no serving plane."""
    settings = Settings(state_dir=tmp_path / "var", models_dir=tmp_path / "models", registry_path=tmp_path / "m.yml",
                        cpu_memory_budget_gb=16, hf_endpoint=f"http://127.0.0.1:{free_port()}",  # no hub: a closed port
                        ray_port=free_port())  # nothing listens there: no serving plane unless ``serving`` is one
    app = create_app(settings)
    app.dependency_overrides[get_nvml] = lambda: nvml
    if serving is not None:
        connected = ConnectedServing(serving)
        app.dependency_overrides[get_serving] = lambda: connected
    return TestClient(app, base_url="http://127.0.0.1")


def test_this_host_without_a_gpu_says_so_and_reports_the_cpu_budget(tmp_path):
    import pynvml  # the real nvidia-ml-py: no driver on this machine

    models = [{"id": "embed", "state": "ready", "memory_gb": 1.3, "pids": []}]
    with client(tmp_path, pynvml, single_box(models)) as c:
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
    with client(tmp_path, nvml, single_box(models)) as c:
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


def local_gpus():
    """This host (the head): an H100 with m0 and a process llmbox does not know, and an idle L4."""
    return FakeNvml([FakeGpu(used_gb=30.5, gpu_percent=40), FakeGpu(name="NVIDIA L4", total_gb=24.0, used_gb=0.0)])


def test_a_cluster_answers_this_hosts_gpus_and_every_nodes_devices(tmp_path):
    with client(tmp_path, local_gpus(), manager(NODES)) as c:
        response = c.get("/api/gpu")
    assert response.status_code == 200
    body = response.json()
    assert body["nodes"] == NODES  # head first; the worker with both its GPUs, budgets and models
    worker = body["nodes"][1]
    assert worker["name"] == "gpu-b" and worker["address"] == "10.0.0.2" and worker["models"] == ["m1"]
    assert [(d["name"], d["total_gb"], d["booked_gb"], d["room_gb"]) for d in worker["devices"]] \
        == [("NVIDIA L4", 22.03, 9.75, 12.28), ("NVIDIA L4", 22.03, 0.0, 22.03)]
    # This host's GPU 0 holds m0 only: m1 is on GPU 0 of the worker, which NVML here cannot see.
    first, second = body["devices"]
    assert [m["id"] for m in first["models"]] == ["m0"] and first["other_processes_gb"] == 2.5
    assert second["models"] == [] and second["other_processes_gb"] == 0.0


def test_without_a_serving_plane_this_hosts_gpus_still_answer_and_nodes_is_absent(tmp_path):
    with client(tmp_path, local_gpus()) as c:
        response = c.get("/api/gpu")
    assert response.status_code == 200
    body = response.json()
    assert "nodes" not in body
    assert [d["name"] for d in body["devices"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    assert body["devices"][0]["models"] == [] and body["devices"][0]["other_processes_gb"] == 30.5
