"""What the roles expose, read from their files (no LXC): the example inventory is loopback and its
public vault values are known to the preflight; pack-source ships no inventory, vault or password;
each secret reaches only the unit that uses it; the bridge filter lets only the published ports in;
the container config maps ids (unprivileged)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tarfile
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.infra.conftest import ROLES, ROOT

INVENTORY = ROOT / "inventory"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def decrypt_vault(path: Path, password: bytes) -> str:
    """Ansible Vault 1.1 (AES256): PBKDF2-SHA256 keys, HMAC-SHA256 checked, AES-CTR."""
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    lines = path.read_text().splitlines()
    assert lines[0].startswith("$ANSIBLE_VAULT;1.1;AES256"), f"{path} is not an AES256 vault"
    salt, mac, data = (bytes.fromhex(p) for p in bytes.fromhex("".join(lines[1:])).decode().split("\n"))
    key = PBKDF2HMAC(hashes.SHA256(), 80, salt, 10000).derive(password)
    check = hmac.HMAC(key[32:64], hashes.SHA256())
    check.update(data)
    check.verify(mac)
    plain = Cipher(algorithms.AES(key[:32]), modes.CTR(key[64:])).decryptor()
    padded = plain.update(data) + plain.finalize()
    return padded[: -padded[-1]].decode()


@pytest.fixture(scope="module")
def example_vault() -> dict:
    password = (ROOT / "ansible/example-vault-password").read_bytes().strip()
    return yaml.safe_load(decrypt_vault(INVENTORY / "group_vars/llmbox/vault.yml", password))


def test_example_inventory_binds_loopback():
    assert load(INVENTORY / "group_vars/llmbox/main.yml")["llmbox_app_host"] == "127.0.0.1"


def test_preflight_knows_every_public_value_of_the_example_vault(example_vault):
    known = set(load(ROLES / "llmbox_app/vars/main.yml")["_llmbox_app_example_secret_sha256"])
    for key in example_vault["vault_llmbox_api_keys"]:
        assert hashlib.sha256(key.encode()).hexdigest() in known
    for token in example_vault["vault_llmbox_admin_tokens"]:
        assert token["sha256"].removeprefix("sha256:") in known
    assert not example_vault["vault_llmbox_hf_token"], "the example vault must not hold an HF token"
    # The clear values themselves are not written in the role.
    role_text = "".join(p.read_text() for p in (ROLES / "llmbox_app").rglob("*.yml"))
    assert not any(key in role_text for key in example_vault["vault_llmbox_api_keys"])
    openwebui = load(ROLES / "openwebui/vars/main.yml")["_openwebui_example_secret_key_sha256"]
    assert hashlib.sha256(example_vault["vault_openwebui_secret_key"].encode()).hexdigest() == openwebui


def test_molecule_does_not_use_the_example_values(example_vault):
    password = (ROOT / "molecule/default/vault-password").read_bytes().strip()
    molecule = yaml.safe_load(decrypt_vault(ROOT / "molecule/default/inventory/group_vars/llmbox/vault.yml", password))
    assert not set(molecule["vault_llmbox_api_keys"]) & set(example_vault["vault_llmbox_api_keys"])
    assert molecule["vault_llmbox_hf_token"], "the scenario needs an HF token to check where it goes"


@pytest.mark.skipif(shutil.which("git") is None, reason="pack-source.sh lists files with git")
def test_pack_source_ships_no_inventory_vault_password_or_molecule(tmp_path):
    out = tmp_path / "source.tar.gz"
    subprocess.run([str(ROLES / "python_env/files/pack-source.sh"), str(ROOT), str(out)], check=True,
                   capture_output=True, timeout=120)
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert "scripts/install.sh" in names and "app/settings.py" in names  # what the container needs
    leaked = [n for n in names if n.startswith(("inventory/", "molecule/")) or "password" in n or "vault" in n]
    assert not leaked, leaked
    writable = [m.name for m in members if m.mode & 0o022]
    assert not writable, f"writable by group or others: {writable}"
    with tarfile.open(out) as tar:
        for m in members:
            if m.isfile():
                assert not tar.extractfile(m).read(14).startswith(b"$ANSIBLE_VAULT"), m.name


def environment(name: str, **settings) -> jinja2.Environment:
    # Ansible resolves an include in the role's templates folder (the llmbox_app units' _service-common.j2).
    templates = ROLES / name / "templates"
    loader = jinja2.FileSystemLoader([templates])
    env = jinja2.Environment(loader=loader, trim_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: f"# {text}"
    env.globals.update(ansible_managed="Ansible managed", **settings)
    return env


APP = {"llmbox_app_api_port": 8001, "llmbox_app_ui_port": 8080, "llmbox_app_venv": "/opt/llmbox/venv",
       "llmbox_app_user": "llmbox", "llmbox_app_group": "llmbox", "llmbox_app_app_dir": "/opt/llmbox/app",
       "llmbox_app_home": "/var/lib/llmbox", "llmbox_app_data_dir": "/srv/llmbox", "llmbox_app_deploy_timeout_s": 900,
       "llmbox_app_ray_environment_file": "/etc/llmbox/ray-head.env",
       "llmbox_app_environment_file": "/etc/llmbox/llmbox.env",
       "_llmbox_app_keys_environment_file": "/etc/llmbox/api-keys.env",
       "_llmbox_app_hub_environment_file": "/etc/llmbox/hub.env",
       # The units' shared hardening (the llmbox_systemd role, a meta dependency of every unit role).
       "llmbox_systemd_hardening": load(ROLES / "llmbox_systemd/defaults/main.yml")["llmbox_systemd_hardening"]}


def env_files(text: str) -> set[str]:
    return {line.split("=", 1)[1] for line in text.splitlines() if line.startswith("EnvironmentFile=")}


@pytest.mark.parametrize(("unit", "secrets"), [
    ("llmbox-deploy", {"/etc/llmbox/api-keys.env"}),  # hashes the keys for the router
    ("llmbox-api", {"/etc/llmbox/hub.env"}),  # calls the hub
    ("llmbox-ui", set()),
    ("llmbox-reconcile", set()),
])
def test_each_unit_loads_only_the_secrets_it_uses(unit, secrets):
    text = environment("llmbox_app", **APP).get_template(f"etc/systemd/system/{unit}.service.j2").render()
    assert env_files(text) == {"/etc/llmbox/ray-head.env", "/etc/llmbox/llmbox.env"} | secrets


def test_settings_file_holds_no_secret():
    text = (ROLES / "llmbox_app/templates/etc/llmbox/llmbox.env.j2").read_text()
    assert "API_KEYS" not in text and "HF_TOKEN" not in text and "hf_token" not in text


def test_ray_head_loads_no_secret():
    text = (ROLES / "ray_head/templates/etc/systemd/system/ray-head.service.j2").read_text()
    assert [line for line in text.splitlines() if line.startswith("EnvironmentFile=")] == [
        "EnvironmentFile={{ ray_head_environment_file }}"]


def lxc_filters() -> dict:
    spec = importlib.util.spec_from_file_location("f", ROLES / "lxc_host/filter_plugins/lxc_host_filters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def render_lxc(template: str, **settings) -> str:
    env = environment("lxc_host")
    env.filters.update(lxc_filters())
    return env.get_template(template).render(**settings)


NET = {"lxc_host_bridge": "llmboxbr0", "lxc_host_bridge_address": "10.87.0.1/24", "lxc_host_nat": True,
       "lxc_host_published_ports": [8000, 8001, 8080, 3000], "lxc_host_container_host_ports": [],
       "lxc_host_cluster_subnets": [], "lxc_host_cluster_ports": ["6379", "10002-19999"]}


def test_bridge_filter_lets_only_the_published_ports_in():
    text = render_lxc("etc/llmbox/lxc-network.nft.j2", **NET)
    assert "masquerade" in text
    assert 'oifname "llmboxbr0" iifname != "llmboxbr0" jump to_container' in text
    chain = text.split("chain to_container {", 1)[1].split("\n  }", 1)[0]
    assert "tcp dport { 3000, 8000, 8001, 8080 } accept" in chain
    assert chain.strip().endswith("counter drop")
    assert 'iifname "llmboxbr0" jump from_container' in text


def test_bridge_filter_opens_no_ray_port_without_cluster_subnets():
    text = render_lxc("etc/llmbox/lxc-network.nft.j2", **NET)
    assert "6379" not in text and "10002-19999" not in text
    assert "ip saddr 10.87.0.0/24 ip daddr != 10.87.0.0/24 masquerade" in text


def test_bridge_filter_opens_ray_ports_only_from_the_cluster_subnets():
    text = render_lxc("etc/llmbox/lxc-network.nft.j2", **{**NET, "lxc_host_cluster_subnets": ["10.87.1.0/24"]})
    chain = text.split("chain to_container {", 1)[1].split("\n  }", 1)[0]
    assert "ip saddr { 10.87.1.0/24 } tcp dport { 6379, 10002-19999 } accept" in chain
    assert [l.strip() for l in chain.splitlines() if l.strip().startswith("tcp dport")] == [
        "tcp dport { 3000, 8000, 8001, 8080 } accept"], chain  # Ray ports never from anywhere else
    # Ray nodes see each other's own addresses: no masquerade towards the cluster.
    assert "ip saddr 10.87.0.0/24 ip daddr != { 10.87.0.0/24, 10.87.1.0/24 } masquerade" in text


WORKER = {"ray_worker_user": "llmbox", "ray_worker_group": "llmbox", "ray_worker_app_dir": "/opt/llmbox/app",
          "ray_worker_venv": "/opt/llmbox/venv", "ray_worker_home": "/var/lib/llmbox",
          "ray_worker_state_dir": "/var/lib/llmbox/state", "ray_worker_environment_file": "/etc/llmbox/ray-worker.env",
          "ray_worker_head_address": "10.87.0.10", "ray_worker_head_port": 6379, "ray_worker_writable_paths": [],
          "llmbox_systemd_hardening": APP["llmbox_systemd_hardening"]}


def test_ray_worker_joins_the_head_hardened_and_loads_no_secret():
    text = environment("ray_worker", **WORKER).get_template("etc/systemd/system/ray-worker.service.j2").render()
    assert env_files(text) == {"/etc/llmbox/ray-worker.env"}
    assert "ExecStart=/opt/llmbox/venv/bin/python -m app.ray_head --join 10.87.0.10:6379" in text
    for line in ("User=llmbox", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service", "Restart=on-failure"):
        assert line in text.splitlines(), line


def test_every_unit_has_the_shared_hardening_once():
    """One owner (llmbox_systemd): no unit template spells a hardening line itself."""
    lines = APP["llmbox_systemd_hardening"].splitlines()
    for template in ROLES.glob("*/templates/**/*.service.j2"):
        text = template.read_text()
        if "User=" not in text and "_service-common.j2" not in text:
            continue  # host units (lxc_host) run as root and are not llmbox services
        assert "{{ llmbox_systemd_hardening }}" in text or "_service-common.j2" in text, template
        assert not [line for line in lines if line in text.splitlines()], template


def test_default_published_ports_are_the_container_roles_ports():
    published = set(load(ROLES / "lxc_host/defaults/main.yml")["lxc_host_published_ports"])
    app = load(ROLES / "llmbox_app/defaults/main.yml")
    ports = {app["llmbox_app_serve_port"], app["llmbox_app_api_port"], app["llmbox_app_ui_port"],
             load(ROLES / "openwebui/defaults/main.yml")["openwebui_port"]}
    assert published == ports


CONFIG = {"lxc_host_container_name": "llmbox", "_lxc_host_container_dir": "/var/lib/lxc/llmbox",
          "lxc_host_autostart": True, "lxc_host_bridge": "llmboxbr0", "lxc_host_bridge_address": "10.87.0.1/24",
          "lxc_host_container_address": "10.87.0.10/24", "lxc_host_data_dir": "/srv/llmbox",
          "lxc_host_container_mounts": [], "lxc_host_gpu_passthrough": False}


def test_container_is_unprivileged_by_default():
    defaults = load(ROLES / "lxc_host/defaults/main.yml")
    assert defaults["lxc_host_unprivileged"] is True
    base, count = defaults["lxc_host_idmap_base"], defaults["lxc_host_idmap_count"]
    assert base >= 1000000 and count >= 65536  # above the ranges Debian's useradd hands out first
    env = environment("lxc_host")
    env.filters["hash"] = lambda value, kind: hashlib.new(kind, value.encode()).hexdigest()
    text = env.get_template("var/lib/lxc/config.j2").render(lxc_host_unprivileged=True, lxc_host_idmap_base=base,
                                                           lxc_host_idmap_count=count, **CONFIG).splitlines()
    assert f"lxc.idmap = u 0 {base} {count}" in text and f"lxc.idmap = g 0 {base} {count}" in text
    assert "lxc.include = /usr/share/lxc/config/debian.userns.conf" in text
