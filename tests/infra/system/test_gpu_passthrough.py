"""GPU passthrough on fake device nodes: the container config and what the container sees.

/proc/devices cannot be faked, so the scenario points lxc_host_gpu_proc_devices at a fixture
file in its format; the device nodes are real char devices (mknod) with NVIDIA's majors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not expected()["lxc_host_gpu_passthrough"]:
    pytest.skip("lxc_host_gpu_passthrough is off in this inventory", allow_module_level=True)


def majors(settings) -> dict[str, int]:
    text = Path(settings["lxc_host_gpu_proc_devices"]).read_text()
    char = text.split("Block devices:")[0]
    return {name: int(num) for num, name in (line.split() for line in char.splitlines()[1:] if line.strip())
            if name.startswith("nvidia")}


@pytest.fixture(scope="module")
def config(settings) -> list[str]:
    return Path(f"/var/lib/lxc/{settings['lxc_host_container_name']}/config").read_text().splitlines()


def test_config_allows_every_nvidia_major_in_both_cgroup_forms(settings, config):
    found = majors(settings)
    assert "nvidia-uvm" in found  # the dynamic one: it must come from the file, not a constant
    for major in {195, *found.values()}:
        assert f"lxc.cgroup2.devices.allow = c {major}:* rwm" in config
        assert f"lxc.cgroup.devices.allow = c {major}:* rwm" in config


@pytest.mark.parametrize("node", ["nvidia0", "nvidiactl", "nvidia-uvm"])
def test_config_bind_mounts_the_node(settings, config, node):
    source = f"{settings['lxc_host_gpu_device_dir']}/{node}"
    assert f"lxc.mount.entry = {source} dev/{node} none bind,optional,create=file 0 0" in config


@pytest.mark.parametrize("node", ["nvidia0", "nvidiactl", "nvidia-uvm"])
def test_node_is_visible_inside_with_the_hosts_numbers(container, settings, node):
    host = Path(settings["lxc_host_gpu_device_dir"], node).stat()
    assert container.run(f"test -c /dev/{node}").rc == 0, f"/dev/{node} is not a character device inside"
    out = container.run(f"stat -c '%t %T' /dev/{node}").stdout.split()
    assert (int(out[0], 16), int(out[1], 16)) == (host.st_rdev >> 8, host.st_rdev & 0xFF)
