"""Head + worker: the worker container joined the head's Ray cluster, and a model pinned to the worker
(``nodes: [<worker's node name>]`` in its registry entry) answers a chat completion through the head's
:8000. Also what an operator would check on the worker: its unit running and hardened, the cluster's
token a 0600 copy of the head's, its settings naming the head.

Skipped when the inventory has no host in group llmbox_workers."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected, journal_of, lxc_host

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not expected()["workers"]:
    pytest.skip("no host in group llmbox_workers in this inventory", allow_module_level=True)

# The head's Ray variables, exactly as its processes get them (app/ray_head.py ray_variables), with the
# head unit's settings files loaded: then `ray status` runs as the service user, as the box's own drivers do.
RAY_STATUS = r"""
set -a; for f in {env_files}; do . "$f"; done; set +a
cd {app_dir}
eval "$({venv}/bin/python -c 'import shlex
from app.ray_head import ray_variables
from app.settings import get_settings
for k, v in ray_variables(get_settings()).items(): print(f"export {{k}}={{shlex.quote(v)}}")')"
exec {venv}/bin/ray status
"""


@pytest.fixture(scope="module")
def worker(settings):
    return lxc_host(settings["workers"][0]["container"])


@pytest.fixture(scope="module")
def worker_settings(settings) -> dict:
    return settings["workers"][0]


def ray_status(container, settings) -> str:
    script = RAY_STATUS.format(env_files=" ".join(shlex.quote(f) for f in settings["head_environment_files"]),
                               app_dir=settings["llmbox_install_dir"], venv=settings["llmbox_venv"])
    out = container.run(f"runuser -u {settings['llmbox_user']} -- /bin/sh -c {shlex.quote(script)}")
    assert out.rc == 0, f"ray status failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def active_nodes(status: str) -> int:
    """How many nodes `ray status` lists as active ("Active:" then one " 1 node_<id>" line each)."""
    section = status.split("Active:", 1)[1].split("Pending:", 1)[0]
    return len(re.findall(r"^\s*\d+\s+node_[0-9a-f]+", section, re.M))


def test_worker_unit_is_active_enabled_and_hardened(worker, settings):
    service = worker.service("ray-worker.service")
    assert service.is_running, f"ray-worker is not active; its journal:\n{journal_of(worker, 'ray-worker')}"
    assert service.is_enabled
    show = worker.run("systemctl show ray-worker --property=User,NoNewPrivileges,Restart,ProtectSystem,"
                      "CapabilityBoundingSet,SystemCallFilter,UMask").stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert (props["User"], props["NoNewPrivileges"], props["Restart"], props["ProtectSystem"]) == (
        settings["llmbox_user"], "yes", "on-failure", "strict")
    assert props["CapabilityBoundingSet"] == "" and props["UMask"] == "0027"
    assert "init_module" not in props["SystemCallFilter"].split()


def test_worker_has_the_heads_token_privately(container, worker, settings):
    path = f"{settings['llmbox_state_dir']}/ray-auth-token"
    copy, original = worker.file(path), container.file(path)
    assert (copy.user, copy.group, copy.mode) == (settings["llmbox_user"], settings["llmbox_user"], 0o600)
    assert copy.content == original.content and len(original.content) >= 16


def test_worker_settings_name_its_address_and_the_head(worker, worker_settings, settings):
    text = worker.file(worker_settings["environment_file"]).content_string
    assert f'LLMBOX_CLUSTER_IP="{worker_settings["cluster_ip"]}"' in text, text
    assert f'LLMBOX_NODE_NAME="{worker_settings["node_name"]}"' in text, text
    unit = worker.file("/etc/systemd/system/ray-worker.service").content_string
    assert f"-m app.ray_head --join {settings['head_cluster_ip']}:{settings['llmbox_ray_port']}" in unit, unit


def test_head_listens_on_the_cluster_address(container, settings):
    text = container.file(settings["head_environment_files"][0]).content_string
    assert f"LLMBOX_CLUSTER_IP={settings['head_cluster_ip']}" in text, text


def test_ray_status_on_the_head_shows_both_nodes(container, worker, settings):
    deadline, status = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        status = ray_status(container, settings)
        if active_nodes(status) >= 2:
            break
        time.sleep(5)
    assert active_nodes(status) == 2, (f"ray status on the head:\n{status}\nthe worker's journal:\n"
                                       f"{journal_of(worker, 'ray-worker')}")


@pytest.fixture(scope="module")
def pinned_model(container, settings, worker_settings) -> str | None:
    """The id of a served model the runtime registry pins to the worker (nodes: [its node name])."""
    import yaml

    registry = yaml.safe_load(container.file(settings["llmbox_app_registry_path"]).content_string)["llmbox_registry"]
    name = worker_settings["node_name"] or worker_settings["container"]
    return next((m["id"] for m in registry["models"] if m.get("serve") and name in (m.get("nodes") or [])), None)


def test_a_model_pinned_to_the_worker_answers_through_the_head(container, worker, settings, pinned_model):
    model = pinned_model
    if not model:
        pytest.skip("the registry pins no served model to the worker")
    key = settings["llmbox_app_api_keys"][0]
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    args = ["curl", "-sS", "-m", "120", "-w", "\\n%{http_code}", "-H", f"Authorization: Bearer {key}",
            "-H", "Content-Type: application/json", "-d", json.dumps(body),
            f"http://127.0.0.1:{settings['llmbox_app_serve_port']}/v1/chat/completions"]
    # The first request loads it on the worker (engine start ~40-75 s here): the box answers 503 with
    # Retry-After while it loads (LLMBOX_LOAD_WAIT_S), so ask again until it answers.
    deadline, status, text = time.monotonic() + 420, "", ""
    while time.monotonic() < deadline:
        out = container.run(" ".join(shlex.quote(a) for a in args))
        text, _, status = out.stdout.rpartition("\n")
        if status != "503":
            break
        time.sleep(5)
    assert status == "200", (f"chat with {model}: {status} {text}\nthe worker's journal:\n"
                             f"{journal_of(worker, 'ray-worker')}")
    answer = json.loads(text)
    assert answer["choices"][0]["message"]["content"] is not None
    # The replica runs on the worker: its engine's process is there, not on the head.
    engines = worker.run("pgrep -u {0} -f -c 'EngineCore|ServeReplica' || true".format(settings["llmbox_user"]))
    assert int(engines.stdout.strip() or 0) > 0, "no engine process on the worker"
