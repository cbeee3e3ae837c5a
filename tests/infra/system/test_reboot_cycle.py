"""GPU passthrough survives a host reboot: a reboot cycle on the scenario's fake devices.

A reboot can give nvidia-uvm another dynamic major. The cycle: stop the container, remake the fake
nvidia-uvm nodes with a new major and rewrite the /proc/devices fixture to match, run what
llmbox-nvidia-devices.service runs at boot (the installed unit's ExecStart), start the container.
Then a boot where nvidia-uvm did not load: the container must not start. Then back to the
converged state, and the host play must find nothing to change.

Runs after the other system tests (file order): it restarts the container.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT
from tests.infra.system.conftest import (ENABLED, SKIP_REASON, expected, nvidia_boot_command, nvidia_fragment,
                                         run_ansible)

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not expected()["lxc_host_gpu_passthrough"]:
    pytest.skip("lxc_host_gpu_passthrough is off in this inventory", allow_module_level=True)

NEW_UVM_MAJOR = 238


def run(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)


def make_uvm_nodes(dev: Path, major: int) -> None:
    for name, minor in (("nvidia-uvm", 0), ("nvidia-uvm-tools", 1)):
        (dev / name).unlink(missing_ok=True)
        os.mknod(dev / name, 0o20666, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)  # as create.yml's mknod -m 0666 (os.mknod's mode goes through the umask)


def boot(name: str, log: Path) -> dict:
    """Run the boot unit's command, then lxc-start: what a host boot does before and at lxc.service."""
    script = subprocess.run(nvidia_boot_command(), capture_output=True, text=True, timeout=60)
    start = run("lxc-start", "--name", name, "--logfile", str(log), "--logpriority", "ERROR")
    state = run("lxc-info", "--name", name, "--state", "--no-humanize").stdout.strip()
    return {"script": script, "start": start, "state": state, "log": log.read_text() if log.exists() else ""}


def stop(name: str) -> None:
    # --kill, like a power cut: the devices are under test, not the shutdown (which waits out
    # lxc-stop's timeout here: the container's systemd ignores LXC's SIGPWR).
    out = run("lxc-stop", "--name", name, "--kill")
    assert out.returncode in (0, 2), f"lxc-stop failed: {out.stderr}"  # 2: it was not running


@pytest.fixture(scope="module")
def cycle(settings, tmp_path_factory) -> dict:
    """Runs the whole cycle once and records what each step saw; always puts the scenario back."""
    name = settings["lxc_host_container_name"]
    dev = Path(settings["lxc_host_gpu_device_dir"])
    proc_devices = Path(settings["lxc_host_gpu_proc_devices"])
    original = proc_devices.read_text()
    old_major = os.major((dev / "nvidia-uvm").stat().st_rdev)
    assert f"{old_major} nvidia-uvm" in original
    logs = tmp_path_factory.mktemp("lxc-start")
    seen: dict = {"old_major": old_major}
    try:
        # A reboot that gave nvidia-uvm a new major.
        stop(name)
        make_uvm_nodes(dev, NEW_UVM_MAJOR)
        proc_devices.write_text(original.replace(f"{old_major} nvidia-uvm", f"{NEW_UVM_MAJOR} nvidia-uvm"))
        seen["new"] = boot(name, logs / "new.log")
        seen["new"]["fragment"] = nvidia_fragment(settings).read_text().splitlines()
        seen["new"]["uvm_inside"] = run("lxc-attach", "--name", name, "--", "stat", "-c", "%F %t:%T",
                                        "/dev/nvidia-uvm").stdout.strip()
        # A boot where nvidia-uvm did not load: no /proc/devices line, no nodes.
        stop(name)
        for node in ("nvidia-uvm", "nvidia-uvm-tools"):
            (dev / node).unlink()
        proc_devices.write_text("".join(line for line in original.splitlines(keepends=True)
                                        if not line.strip().endswith(" nvidia-uvm")))
        seen["no_uvm"] = boot(name, logs / "no-uvm.log")
    finally:
        # Back to the converged state (original major and fixture), started as lxc.service would.
        stop(name)
        make_uvm_nodes(dev, old_major)
        proc_devices.write_text(original)
        seen["restored"] = boot(name, logs / "restored.log")
    return seen


def test_boot_command_remakes_the_fragment_after_a_reboot(cycle):
    script = cycle["new"]["script"]
    assert (script.returncode, script.stdout.strip()) == (0, "changed"), script.stderr


def test_fragment_allows_the_new_uvm_major_instead_of_the_old(cycle):
    fragment = cycle["new"]["fragment"]
    for form in ("lxc.cgroup2.devices.allow", "lxc.cgroup.devices.allow"):
        assert f"{form} = c {NEW_UVM_MAJOR}:* rwm" in fragment
        assert f"{form} = c {cycle['old_major']}:* rwm" not in fragment


def test_container_starts_and_sees_nvidia_uvm_with_the_new_numbers(cycle):
    new = cycle["new"]
    assert new["start"].returncode == 0 and new["state"] == "RUNNING", new["start"].stderr + new["log"][-2000:]
    assert new["uvm_inside"] == f"character special file {NEW_UVM_MAJOR:x}:0"


def test_without_nvidia_uvm_the_unit_fails_and_the_container_does_not_start(cycle):
    no_uvm = cycle["no_uvm"]
    assert no_uvm["script"].returncode == 1
    assert "nvidia-uvm is not loaded" in no_uvm["script"].stderr  # what `journalctl -u llmbox-nvidia-devices` shows
    assert no_uvm["start"].returncode != 0 and no_uvm["state"] != "RUNNING", (
        f"the container started without /dev/nvidia-uvm (state {no_uvm['state']})")
    assert "nvidia-uvm" in no_uvm["log"], f"lxc-start failed for another reason:\n{no_uvm['log'][-2000:]}"


def test_back_to_the_original_devices_the_container_starts_again(cycle):
    restored = cycle["restored"]
    assert restored["script"].returncode == 0, restored["script"].stderr
    assert restored["start"].returncode == 0 and restored["state"] == "RUNNING", (
        restored["start"].stderr + restored["log"][-2000:])


def test_host_play_after_the_reboot_cycle_changes_nothing(cycle):
    out = run_ansible(["ansible-playbook", str(ROOT / "ansible/site.yml"), "--limit", "lxc_hosts"])
    recap = out.stdout[out.stdout.rfind("PLAY RECAP"):]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "changed=0" in recap and "failed=0" in recap, recap
