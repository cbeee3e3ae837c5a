"""System tests of a provisioned llmbox container: testinfra through lxc-attach.

molecule/default/verify.yml runs them (plain pytest, tool venv). What to expect comes from the same
inventory the converge used, read through Ansible itself (role defaults where the inventory is
silent), so a switch like llmbox_app_ui_enabled decides what is asserted.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROLES

INVENTORY_FILE = os.environ.get("MOLECULE_INVENTORY_FILE", "")
ENABLED = bool(INVENTORY_FILE) and shutil.which("lxc-attach") is not None and shutil.which("ansible") is not None
SKIP_REASON = "no provisioned container under test: run these through `molecule verify` (scripts/infra.sh)"
HERE = Path(__file__).parent


def role_defaults(role: str) -> dict:
    import yaml

    return yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())


# The inventory-level variables every role defaults to (inventory/group_vars/all/main.yml).
SHARED_VARS = ["llmbox_user", "llmbox_group", "llmbox_home", "llmbox_install_dir", "llmbox_venv", "llmbox_state_dir",
               "llmbox_config_dir", "llmbox_ray_port", "llmbox_data_dir", "llmbox_models_dir"]


def ansible_values(pattern: str, expressions: dict[str, str]) -> dict[str, dict]:
    """{inventory host: {name: value}} of these Jinja expressions, templated by Ansible for each host of the
    pattern (run on the controller: hostvars name the host)."""
    msg = "{{ {" + ", ".join(f"'{k}': {v}" for k, v in expressions.items()) + "} | to_json }}"
    out = run_ansible(["ansible", pattern, "-m", "ansible.builtin.debug", "-a", f"msg={msg}"])
    assert out.returncode == 0, f"reading the inventory failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    # The ad-hoc (minimal) callback prints "host | SUCCESS => {result as JSON}" per host.
    return {m[1]: json.loads(json.loads(m[2])["msg"])
            for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*?^\})", out.stdout, re.M | re.S)}


@functools.cache
def expected() -> dict:
    """The settings the converge applied: inventory values (templated by Ansible), else role defaults (which
    name the inventory's shared llmbox_* variables, rendered with their values)."""
    import jinja2

    defaults = {**role_defaults("llmbox_app"), **role_defaults("lxc_host"), **role_defaults("openwebui")}
    container_vars = ["llmbox_app_ui_enabled", "llmbox_app_user", "llmbox_app_data_dir", "llmbox_app_registry_path",
                      "llmbox_app_registry_mode", "llmbox_app_serve_port", "llmbox_app_api_port", "llmbox_app_ui_port",
                      "llmbox_app_environment_file", "llmbox_app_api_keys", "llmbox_app_hf_token", "openwebui_enabled",
                      "openwebui_port", "openwebui_user", *SHARED_VARS]
    host_vars = ["lxc_host_container_name", "lxc_host_gpu_passthrough", "lxc_host_gpu_device_dir",
                 "lxc_host_gpu_proc_devices", "lxc_host_data_dir", "lxc_host_unprivileged", "lxc_host_idmap_base",
                 "lxc_host_idmap_count", "lxc_host_bridge", "lxc_host_container_address", "lxc_host_published_ports",
                 "lxc_host_cluster_subnets", "lxc_host_cluster_ports"]
    c = "hostvars[groups['llmbox'][0]]"
    h = "hostvars[groups['lxc_hosts'][0]]"
    fields = {v: f"{c}.{v} | default('__unset__')" for v in container_vars}
    fields |= {v: f"{h}.{v} | default('__unset__')" for v in host_vars}
    fields |= {"container_host": "groups['llmbox'][0]", "container": f"{c}.ansible_host | default(groups['llmbox'][0])",
               "head_cluster_ip": f"{c}.llmbox_cluster_ip | default('')",
               "worker_hosts": "groups['llmbox_workers'] | default([])"}
    found = ansible_values("localhost", fields)["localhost"]
    shared = {k: found[k] for k in SHARED_VARS if found[k] != "__unset__"}
    values = {k: (defaults.get(k) if v == "__unset__" else v) for k, v in found.items()}
    context = {**values, **shared}
    values = {k: jinja2.Template(v).render(**context) if isinstance(v, str) and "{{" in v else v
              for k, v in values.items()}
    if found["llmbox_app_registry_path"] == "__unset__":  # the role's default, spelled out
        values["llmbox_app_registry_path"] = f"{values['llmbox_app_data_dir']}/registry/models.yml"
    values["head_environment_files"] = [f"{values['llmbox_config_dir']}/ray-head.env",
                                        values["llmbox_app_environment_file"]]
    values["workers"] = []
    if values["worker_hosts"]:
        workers = ansible_values("llmbox_workers", {
            "container": "ansible_host | default(inventory_hostname)", "cluster_ip": "llmbox_cluster_ip | default('')",
            "node_name": "llmbox_node_name | default('')",
            "environment_file": f"ray_worker_environment_file | default('{values['llmbox_config_dir']}/ray-worker.env')"})
        values["workers"] = [workers[name] for name in values["worker_hosts"]]
    return values


def run_ansible(argv: list[str]) -> subprocess.CompletedProcess:
    """Run an Ansible CLI against the converge's inventory (results printed as JSON)."""
    env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run([*argv, "-i", str(Path(INVENTORY_FILE).parent)], env=env, capture_output=True, text=True,
                          timeout=300)


NVIDIA_UNIT = Path("/etc/systemd/system/llmbox-nvidia-devices.service")


def nvidia_boot_command() -> list[str]:
    """What systemd runs at boot to make the NVIDIA devices: the installed unit's ExecStart."""
    lines = [line for line in NVIDIA_UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, f"{NVIDIA_UNIT} has {len(lines)} ExecStart lines"
    return shlex.split(lines[0].removeprefix("ExecStart="))


def nvidia_fragment(settings: dict) -> Path:
    """The device fragment the boot script writes and the container's config includes."""
    return Path(f"/var/lib/lxc/{settings['lxc_host_container_name']}/nvidia.conf")


@pytest.fixture(scope="session")
def settings() -> dict:
    return expected()


def lxc_host(name: str):
    """A testinfra host whose commands run in the LXC container NAME through lxc-attach."""
    import testinfra
    from testinfra.backend import base

    class LxcAttachBackend(base.BaseBackend):
        """testinfra's lxc:// is LXD's; this one attaches to a classic LXC container by name."""

        NAME = "lxc-attach"

        def __init__(self, name: str, *args, **kwargs):
            self.name = name
            super().__init__(name, *args, **kwargs)

        def run(self, command: str, *args: str, **kwargs) -> base.CommandResult:
            cmd = self.get_command(command, *args)
            out = self.run_local("lxc-attach --name %s --clear-env --set-var %s -- /bin/sh -c %s", self.name,
                                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", cmd)
            out.command = self.encode(cmd)
            return out

    return testinfra.host.Host(LxcAttachBackend(name))


def journal_of(host, unit: str, lines: int = 80) -> str:
    """The unit's last log lines in that container, for failure messages."""
    return host.run(f"journalctl --unit {unit} --lines {lines} --no-pager").stdout


@pytest.fixture(scope="session")
def container(settings):
    """The head's container (testinfra through lxc-attach)."""
    return lxc_host(settings["container"])


@pytest.fixture(scope="session")
def journal(container):
    """journal(unit): the unit's last log lines, for failure messages."""
    return lambda unit, lines=80: journal_of(container, unit, lines)
