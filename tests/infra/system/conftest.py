"""System tests of a provisioned llmbox container: testinfra through lxc-attach.

Molecule's verify step runs them (molecule/default, tool venv). What to expect comes from the same
inventory the converge used, read through Ansible itself (role defaults where the inventory is
silent), so a switch like llmbox_app_ui_enabled decides what is asserted.
"""

from __future__ import annotations

import functools
import json
import os
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


@functools.cache
def expected() -> dict:
    """The settings the converge applied: inventory values (templated by Ansible), else role defaults."""
    defaults = {**role_defaults("llmbox_app"), **role_defaults("lxc_host")}
    container_vars = ["llmbox_app_ui_enabled", "llmbox_app_user", "llmbox_app_data_dir", "llmbox_app_registry_path",
                      "llmbox_app_registry_mode", "llmbox_app_serve_port", "llmbox_app_api_port", "llmbox_app_ui_port",
                      "llmbox_app_environment_file", "llmbox_app_api_keys", "llmbox_app_hf_token"]
    host_vars = ["lxc_host_container_name", "lxc_host_gpu_passthrough", "lxc_host_gpu_device_dir",
                 "lxc_host_gpu_proc_devices", "lxc_host_data_dir", "lxc_host_unprivileged", "lxc_host_idmap_base",
                 "lxc_host_idmap_count", "lxc_host_bridge", "lxc_host_container_address", "lxc_host_published_ports"]
    c = "hostvars[groups['llmbox'][0]]"
    h = "hostvars[groups['lxc_hosts'][0]]"
    fields = [f"'{v}': {c}.{v} | default('__unset__')" for v in container_vars]
    fields += [f"'{v}': {h}.{v} | default('__unset__')" for v in host_vars]
    fields.append(f"'container_host': groups['llmbox'][0], 'container': {c}.ansible_host | default(groups['llmbox'][0])")
    msg = "{{ {" + ", ".join(fields) + "} | to_json }}"
    out = run_ansible(["ansible", "localhost", "-m", "ansible.builtin.debug", "-a", f"msg={msg}"])
    assert out.returncode == 0, f"reading the inventory failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    # The ad-hoc (minimal) callback prints "localhost | SUCCESS => {result as JSON}".
    found = json.loads(json.loads(out.stdout.split("=>", 1)[1])["msg"])
    values = {k: (defaults.get(k) if v == "__unset__" else v) for k, v in found.items()}
    if found["llmbox_app_registry_path"] == "__unset__":  # the role's default, spelled out
        values["llmbox_app_registry_path"] = f"{values['llmbox_app_data_dir']}/registry/models.yml"
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


@pytest.fixture(scope="session")
def container(settings):
    """A testinfra host whose commands run in the container through lxc-attach."""
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

    return testinfra.host.Host(LxcAttachBackend(settings["container"]))


@pytest.fixture(scope="session")
def journal(container):
    """journal(unit): the unit's last log lines, for failure messages."""
    def tail(unit: str, lines: int = 80) -> str:
        return container.run(f"journalctl --unit {unit} --lines {lines} --no-pager").stdout
    return tail
