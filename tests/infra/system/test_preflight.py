"""The roles refuse clearly what cannot work: passthrough without a usable NVIDIA driver or GPU
(scripts/gpu_preflight.sh, run against fake nvidia-smi scripts), driver libraries without a driver
or for a driver too old. Each runs only the role's preflight tasks (nothing changes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.infra.system.conftest import ENABLED, HERE, SKIP_REASON, run_ansible

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)


def preflight(role: str, target: str, **settings) -> tuple[int, str]:
    """(exit code, output) of the role's preflight with these settings."""
    extra = {"role_under_test": role, "target": target, **settings}
    proc = run_ansible(["ansible-playbook", str(HERE / "preflight.yml"), "-e", json.dumps(extra)])
    return proc.returncode, proc.stdout + proc.stderr


def fake_nvidia_smi(folder: Path, name: str, driver: str, compute_cap: str) -> str:
    """An nvidia-smi that answers gpu_preflight.sh's queries for one GPU."""
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\ncase \"$*\" in\n"
                    f"  *compute_cap*) echo '0, {name}, {driver}, {compute_cap}' ;;\n"
                    f"  *driver_version*) echo '{driver}' ;;\n"
                    "  *) exit 2 ;;\nesac\n")
    path.chmod(0o755)
    return str(path)


def test_lxc_host_refuses_passthrough_without_an_nvidia_driver(tmp_path):
    rc, out = preflight("lxc_host", "lxc_hosts", lxc_host_gpu_passthrough=True,
                        lxc_host_nvidia_smi=str(tmp_path / "nvidia-smi"))
    assert rc != 0 and "nvidia-smi not found: install the NVIDIA driver" in out, out[-2000:]


def test_lxc_host_refuses_a_driver_older_than_580(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "NVIDIA GeForce RTX 4090", "550.127.08", "8.9")
    rc, out = preflight("lxc_host", "lxc_hosts", lxc_host_gpu_passthrough=True, lxc_host_nvidia_smi=smi)
    assert rc != 0 and "NVIDIA driver 550.127.08 is too old" in out and "needs driver 580" in out, out[-2000:]


def test_lxc_host_refuses_a_card_older_than_compute_capability_7_5(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "Tesla P40", "580.65.06", "6.1")
    rc, out = preflight("lxc_host", "lxc_hosts", lxc_host_gpu_passthrough=True, lxc_host_nvidia_smi=smi)
    assert rc != 0 and "GPU 0 Tesla P40 (compute capability 6.1) is older than" in out, out[-2000:]


def test_lxc_host_preflight_passes_with_the_fake_devices(settings):
    if not settings["lxc_host_gpu_passthrough"]:
        pytest.skip("passthrough is off in this inventory")
    rc, out = preflight("lxc_host", "lxc_hosts")
    assert rc == 0, out[-2000:]


def test_nvidia_userspace_refuses_without_a_host_driver():
    # The fake nodes are visible inside, but no driver answers in /proc/driver/nvidia/version.
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True)
    assert rc != 0 and "cannot tell the host's NVIDIA driver version" in out, out[-2000:]


def test_nvidia_userspace_refuses_a_host_driver_older_than_580():
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True,
                        nvidia_userspace_driver_version="550.127.08")
    assert rc != 0 and "NVIDIA driver 550.127.08 is too old" in out and "needs driver 580" in out, out[-2000:]


def test_nvidia_userspace_preflight_accepts_a_580_driver():
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True,
                        nvidia_userspace_driver_version="580.65.06")
    assert rc == 0, out[-2000:]


def test_nvidia_userspace_refuses_without_the_devices():
    rc, out = preflight("nvidia_userspace", "llmbox", nvidia_userspace_enabled=True,
                        nvidia_userspace_device_dir="/nonexistent")
    assert rc != 0 and "does not see the NVIDIA devices" in out, out[-2000:]


# The example vault's public values (inventory/group_vars/llmbox/vault.yml, password committed).
EXAMPLE_SECRETS = {
    "llmbox_app_api_keys": ["example-key-097527ac9296fd97c6fdc0ab4aae19ca"],
    "llmbox_app_admin_tokens": [{"name": "admin", "scope": "admin",
                                 "sha256": "sha256:a45a4ed144594e446dfe4575d3aab5ffe2a1faf537e7d5f5509ef163d56dc537"}],
}


def test_llmbox_app_refuses_the_example_vaults_values():
    rc, out = preflight("llmbox_app", "llmbox", llmbox_app_host="127.0.0.1", **EXAMPLE_SECRETS)
    assert rc != 0 and "the example vault's public values" in out and "ansible-vault create" in out, out[-2000:]
    assert "an API key (llmbox_app_api_keys) and an admin token (llmbox_app_admin_tokens)" in out, out[-2000:]


def test_llmbox_app_accepts_them_only_when_told_and_on_loopback():
    rc, out = preflight("llmbox_app", "llmbox", llmbox_app_host="127.0.0.1", llmbox_app_allow_example_secrets=True,
                        **EXAMPLE_SECRETS)
    assert rc == 0, out[-2000:]
    rc, out = preflight("llmbox_app", "llmbox", llmbox_app_host="0.0.0.0", llmbox_app_allow_example_secrets=True,
                        **EXAMPLE_SECRETS)
    assert rc != 0 and "the example vault's public values" in out, out[-2000:]


def test_llmbox_app_accepts_the_scenarios_own_secrets():
    rc, out = preflight("llmbox_app", "llmbox")
    assert rc == 0, out[-2000:]
