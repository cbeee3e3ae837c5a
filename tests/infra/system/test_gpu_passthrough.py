"""GPU passthrough on fake device nodes: the boot unit, the device fragment it writes, the
container config that includes it, and what the container sees.

/proc/devices and /proc/driver/nvidia cannot be faked, so the scenario points the role at fixture
files in their format; the device nodes are real char devices (mknod) with NVIDIA's majors.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.system.conftest import (ENABLED, NVIDIA_UNIT, SKIP_REASON, expected, nvidia_boot_command,
                                         nvidia_fragment)

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not expected()["lxc_host_gpu_passthrough"]:
    pytest.skip("lxc_host_gpu_passthrough is off in this inventory", allow_module_level=True)

REQUIRED = ["nvidia0", "nvidiactl", "nvidia-uvm"]


def majors(settings) -> dict[str, int]:
    text = Path(settings["lxc_host_gpu_proc_devices"]).read_text()
    char = text.split("Block devices:")[0]
    return {name: int(num) for num, name in (line.split() for line in char.splitlines()[1:] if line.strip())
            if name.startswith("nvidia")}


@pytest.fixture(scope="module")
def fragment(settings) -> list[str]:
    return nvidia_fragment(settings).read_text().splitlines()


def test_boot_unit_makes_the_devices_before_lxc_starts_the_container(settings):
    unit = NVIDIA_UNIT.read_text().splitlines()
    assert "# Ansible managed" in unit[:3], f"{NVIDIA_UNIT} is not the one the role writes"
    for line in ["Type=oneshot", "WantedBy=multi-user.target"]:
        assert line in unit, f"{NVIDIA_UNIT} lacks {line}"
    before = [u for line in unit if line.startswith("Before=") for u in line.split("=", 1)[1].split()]
    assert {"lxc.service", "pve-guests.service"} <= set(before), f"{NVIDIA_UNIT}: Before={before}"
    script = Path(nvidia_boot_command()[0])
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    # The installed script is this inventory's: it works on the scenario's fake nodes and fixtures.
    assert f"dev_dir={settings['lxc_host_gpu_device_dir']}" in script.read_text().splitlines()


def test_boot_command_on_a_converged_host_changes_nothing():
    out = subprocess.run(nvidia_boot_command(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "unchanged"), out.stderr


def test_config_includes_the_device_fragment_and_no_static_rules(settings):
    config = Path(f"/var/lib/lxc/{settings['lxc_host_container_name']}/config").read_text().splitlines()
    assert f"lxc.include = {nvidia_fragment(settings)}" in config
    static = [line for line in config if not line.startswith("#")
              and ("devices.allow" in line or ("mount.entry" in line and "nvidia" in line))]
    assert not static, f"the config itself has device rules or mounts: {static}"


def test_fragment_allows_every_nvidia_major_in_both_cgroup_forms(settings, fragment):
    found = majors(settings)
    assert "nvidia-uvm" in found  # the dynamic one: it must come from the file, not a constant
    for major in {195, *found.values()}:
        assert f"lxc.cgroup2.devices.allow = c {major}:* rwm" in fragment
        assert f"lxc.cgroup.devices.allow = c {major}:* rwm" in fragment


@pytest.mark.parametrize("node", REQUIRED)
def test_fragment_requires_the_node(settings, fragment, node):
    # No "optional": without the node the container does not start (rather than start with an empty file).
    source = f"{settings['lxc_host_gpu_device_dir']}/{node}"
    assert f"lxc.mount.entry = {source} dev/{node} none bind,create=file 0 0" in fragment


def test_fragment_passes_the_other_nodes_optionally(settings, fragment):
    dev = settings["lxc_host_gpu_device_dir"]
    assert f"lxc.mount.entry = {dev}/nvidia-uvm-tools dev/nvidia-uvm-tools none bind,optional,create=file 0 0" in fragment
    assert f"lxc.mount.entry = {dev}/nvidia-caps dev/nvidia-caps none bind,optional,create=dir 0 0" in fragment


@pytest.mark.parametrize("node", REQUIRED)
def test_node_is_visible_inside_with_the_hosts_numbers(container, settings, node):
    host = Path(settings["lxc_host_gpu_device_dir"], node).stat()
    assert container.run(f"test -c /dev/{node}").rc == 0, f"/dev/{node} is not a character device inside"
    out = container.run(f"stat -c '%t %T' /dev/{node}").stdout.split()
    assert (int(out[0], 16), int(out[1], 16)) == (host.st_rdev >> 8, host.st_rdev & 0xFF)
