"""A converged llmbox container: what an operator would check, from inside and from the host."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)

UI_ENABLED = bool(expected()["llmbox_app_ui_enabled"])
UNITS = ["ray-head", "llmbox-deploy", "llmbox-api"] + (["llmbox-ui"] if UI_ENABLED else [])


def http(container, method: str, url: str, body: dict | None = None, key: str | None = None) -> tuple[int, str]:
    """(status, body) of a request made inside the container with curl."""
    args = ["curl", "-sS", "-m", "120", "-X", method, "-w", "\\n%{http_code}", url]
    if key:
        args += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = container.run(" ".join(shlex.quote(a) for a in args))
    assert out.rc == 0, f"curl {url} failed: {out.stderr}"
    text, _, status = out.stdout.rpartition("\n")
    return int(status), text


def env_files(settings) -> dict[str, str]:
    """The role's environment files: settings, the :8000 keys (deploy only), the HF token (API only)."""
    folder = Path(settings["llmbox_app_environment_file"]).parent
    return {"settings": settings["llmbox_app_environment_file"], "keys": str(folder / "api-keys.env"),
            "hub": str(folder / "hub.env")}


@pytest.fixture(scope="module")
def env(container, settings) -> dict:
    """What the environment files hold together (settings, the API keys, the HF token)."""
    values = {}
    for path in env_files(settings).values():
        text = container.file(path).content_string
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        values.update({k: v.strip('"') for k, v in pairs})
    return values


@pytest.fixture(scope="module")
def api_key(env) -> str | None:
    keys = env.get("LLMBOX_API_KEYS", "")
    return keys.split(",")[0] if keys else None


@pytest.fixture(scope="module")
def always_on(container, settings) -> list[str]:
    import yaml

    registry = yaml.safe_load(container.file(settings["llmbox_app_registry_path"]).content_string)["llmbox_registry"]
    ids = [m["id"] for m in registry["models"] if m.get("always_on")]
    assert ids, "the registry has no always-on model"
    return ids


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_active_and_enabled(container, journal, unit):
    service = container.service(f"{unit}.service")
    assert service.is_running or container.run(f"systemctl is-active {unit}").stdout.strip() == "active", (
        f"{unit} is not active; its journal:\n{journal(unit)}")
    assert service.is_enabled


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened(container, settings, unit):
    show = container.run(f"systemctl show {unit} --property=User,NoNewPrivileges,Restart,ProtectSystem").stdout
    props = dict(line.split("=", 1) for line in show.split())
    assert props["User"] == settings["llmbox_app_user"]
    assert props["NoNewPrivileges"] == "yes"
    assert props["Restart"] == "on-failure"
    assert props["ProtectSystem"] == "strict"


@pytest.mark.parametrize("unit", UNITS)
def test_unit_has_the_l13_hardening(container, unit):
    """No capabilities, no namespaces, no kernel modules or logs, a syscall allow-list, umask 0027."""
    names = ["UMask", "CapabilityBoundingSet", "RestrictNamespaces", "ProtectKernelModules", "ProtectKernelLogs",
             "LockPersonality", "SystemCallFilter", "SystemCallErrorNumber"]
    show = container.run(f"systemctl show {unit} --property={','.join(names)}").stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert props["UMask"] == "0027"
    assert props["CapabilityBoundingSet"] == ""
    assert props["RestrictNamespaces"] == "yes"
    assert (props["ProtectKernelModules"], props["ProtectKernelLogs"], props["LockPersonality"]) == ("yes",) * 3
    allowed = props["SystemCallFilter"].split()
    assert "read" in allowed and "init_module" not in allowed and "kexec_load" not in allowed, allowed[:20]
    assert props["SystemCallErrorNumber"] in ("EPERM", "1")
    main = container.run(f"systemctl show {unit} --property=MainPID --value").stdout.strip()
    if main not in ("", "0"):  # llmbox-deploy is a oneshot: its driver has exited
        assert "Seccomp:\t2" in container.run(f"cat /proc/{main}/status").stdout, f"{unit}: no seccomp filter"


def test_ui_unit_matches_the_switch(container):
    unit = container.file("/etc/systemd/system/llmbox-ui.service")
    assert unit.exists == UI_ENABLED, f"llmbox_app_ui_enabled is {UI_ENABLED} but the UI unit {'is missing' if UI_ENABLED else 'exists'}"


def test_models_lists_the_always_on_model_ready(container, settings, api_key, always_on):
    status, body = http(container, "GET", f"http://127.0.0.1:{settings['llmbox_app_serve_port']}/v1/models", key=api_key)
    assert status == 200, body
    models = {m["id"]: m for m in json.loads(body)["data"]}
    for model_id in always_on:
        assert model_id in models, f"{model_id} not in /v1/models: {sorted(models)}"
        assert models[model_id].get("state") == "ready", models[model_id]


def test_embeddings_answer(container, settings, api_key, always_on):
    url = f"http://127.0.0.1:{settings['llmbox_app_serve_port']}/v1/embeddings"
    status, body = http(container, "POST", url, {"model": always_on[0], "input": "hello from molecule"}, key=api_key)
    assert status == 200, body
    vector = json.loads(body)["data"][0]["embedding"]
    assert len(vector) > 100 and any(vector)


def test_the_endpoint_wants_a_key_beyond_loopback(container, settings, env):
    if env.get("LLMBOX_HOST") in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("bound to loopback: no key required")
    status, _ = http(container, "GET", f"http://127.0.0.1:{settings['llmbox_app_serve_port']}/v1/models")
    assert status == 401


def test_management_api_answers(container, settings):
    status, body = http(container, "GET", f"http://127.0.0.1:{settings['llmbox_app_api_port']}/api/health")
    assert status == 200, body


@pytest.mark.skipif(not UI_ENABLED, reason="llmbox_app_ui_enabled is false in the inventory")
def test_admin_ui_answers_and_asks_for_a_login(container, settings):
    status, body = http(container, "GET", f"http://127.0.0.1:{settings['llmbox_app_ui_port']}/healthz")
    assert status == 200, body
    status, body = http(container, "GET", f"http://127.0.0.1:{settings['llmbox_app_ui_port']}/")
    assert status == 302, body  # to the login page


@pytest.mark.skipif(not expected()["openwebui_enabled"], reason="openwebui_enabled is false in the inventory")
def test_openwebui_runs_hardened_and_answers(container, settings, journal):
    service = container.service("openwebui.service")
    assert service.is_running and service.is_enabled, f"openwebui is not active; its journal:\n{journal('openwebui')}"
    show = container.run("systemctl show openwebui --property=User,NoNewPrivileges,ProtectSystem,CapabilityBoundingSet,"
                         "SystemCallFilter").stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert (props["User"], props["NoNewPrivileges"], props["ProtectSystem"]) == (settings["openwebui_user"], "yes", "strict")
    assert props["CapabilityBoundingSet"] == "" and "init_module" not in props["SystemCallFilter"].split()
    # It takes a while to start (migrations, imports): poll its health endpoint.
    url, deadline, status = f"http://127.0.0.1:{settings['openwebui_port']}/health", time.monotonic() + 180, ""
    while time.monotonic() < deadline:
        status = container.run(f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' {url}").stdout.strip()
        if status == "200":
            break
        time.sleep(5)
    assert status == "200", f"{url}: {status}; its journal:\n{journal('openwebui')}"


def test_registry_has_the_service_owner_and_mode(container, settings):
    registry = container.file(settings["llmbox_app_registry_path"])
    assert registry.exists
    assert registry.user == settings["llmbox_app_user"]
    assert registry.group == settings["llmbox_app_user"]
    assert registry.mode == int(str(settings["llmbox_app_registry_mode"]), 8)


def test_registry_and_models_live_on_the_host_bind_mount(container, settings):
    """What a rebuild keeps: the container's registry is the host's file."""
    registry = settings["llmbox_app_registry_path"]
    host_path = Path(settings["lxc_host_data_dir"]) / Path(registry).relative_to(settings["llmbox_app_data_dir"])
    assert host_path.read_text() == container.file(registry).content_string
    assert container.file(f"{settings['llmbox_app_data_dir']}/models").is_directory
    assert Path(host_path.parent, f".{host_path.name}.sync.json").exists(), "no sync baseline next to the registry"


def test_secrets_files_are_private(container, settings):
    for kind, path in env_files(settings).items():
        env_file = container.file(path)
        # Settings readable by the service; the secrets root's alone (systemd reads them as root).
        expected = ("root", settings["llmbox_app_user"], 0o640) if kind == "settings" else ("root", "root", 0o600)
        assert (env_file.user, env_file.group, env_file.mode) == expected, path
    tokens = container.file(str(Path(settings["llmbox_app_environment_file"]).parent / "admin-tokens"))
    assert (tokens.user, tokens.mode) == (settings["llmbox_app_user"], 0o600)
    rows = [line.split() for line in tokens.content_string.splitlines() if line and not line.startswith("#")]
    assert rows and all(len(r) == 3 and r[2].startswith("sha256:") for r in rows), "tokens must be stored hashed"


def test_settings_file_holds_no_secret(container, settings):
    text = container.file(settings["llmbox_app_environment_file"]).content_string
    assert "LLMBOX_API_KEYS=" not in text and "HF_TOKEN=" not in text


def test_app_source_has_no_inventory_vault_or_password_and_nothing_writable(container):
    """pack-source.sh keeps the controller's inventory, vaults and password files out of the container."""
    app = "/opt/llmbox/app"
    assert container.file(f"{app}/scripts/install.sh").exists  # the source is there
    for absent in ("inventory", "molecule", "ansible/example-vault-password"):
        assert not container.file(f"{app}/{absent}").exists, f"{app}/{absent} was shipped"
    found = container.run(f"find {app} \\( -iname '*vault*' -o -iname '*password*' \\) -print").stdout.split()
    assert not found, found
    vaults = container.run(f"grep -rlI --exclude-dir=__pycache__ '^\\$ANSIBLE_VAULT;' {app} || true").stdout.split()
    assert not vaults, f"Ansible Vault files in the container: {vaults}"
    writable = container.run(f"find {app} -perm -o+w ! -type l -print").stdout.split()
    assert not writable, f"world-writable in the app source: {writable}"
