"""The roles refuse clearly what cannot work: passthrough without NVIDIA devices, driver libraries
without a driver. Each runs only the role's preflight tasks (nothing changes)."""

from __future__ import annotations

import json

import pytest

from tests.infra.system.conftest import ENABLED, HERE, SKIP_REASON, run_ansible

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)


def preflight(role: str, target: str, **settings) -> tuple[int, str]:
    """(exit code, output) of the role's preflight with these settings."""
    extra = {"role_under_test": role, "target": target, **settings}
    proc = run_ansible(["ansible-playbook", str(HERE / "preflight.yml"), "-e", json.dumps(extra)])
    return proc.returncode, proc.stdout + proc.stderr


def test_lxc_host_refuses_passthrough_without_nvidia_devices(tmp_path):
    rc, out = preflight("lxc_host", "lxc_hosts", lxc_host_gpu_passthrough=True, lxc_host_gpu_device_dir=str(tmp_path))
    assert rc != 0 and "has no NVIDIA GPU device nodes" in out, out[-2000:]


def test_lxc_host_refuses_passthrough_without_nvidia_uvm(settings, tmp_path):
    proc_devices = tmp_path / "devices"
    proc_devices.write_text("Character devices:\n195 nvidia-frontend\n\nBlock devices:\n  8 sd\n")
    rc, out = preflight("lxc_host", "lxc_hosts", lxc_host_gpu_passthrough=True,
                        lxc_host_gpu_device_dir=settings["lxc_host_gpu_device_dir"],
                        lxc_host_gpu_proc_devices=str(proc_devices))
    assert rc != 0 and "nvidia-uvm is not loaded" in out, out[-2000:]


def test_lxc_host_preflight_passes_with_the_fake_devices(settings):
    if not settings["lxc_host_gpu_passthrough"]:
        pytest.skip("passthrough is off in this inventory")
    rc, out = preflight("lxc_host", "lxc_hosts")
    assert rc == 0, out[-2000:]


def test_nvidia_userspace_refuses_without_a_host_driver():
    # The fake nodes are visible inside, but no driver answers in /proc/driver/nvidia/version.
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True)
    assert rc != 0 and "cannot tell the host's NVIDIA driver version" in out, out[-2000:]


def test_nvidia_userspace_refuses_without_the_devices():
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True,
                        nvidia_userspace_device_dir="/nonexistent")
    assert rc != 0 and "does not see the NVIDIA devices" in out, out[-2000:]
