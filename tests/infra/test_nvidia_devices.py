"""The lxc_host role's boot script llmbox-nvidia-devices, rendered from its template and run against
fixture files (a /proc/devices text, the driver's /proc folder, a device folder, a container rootfs).

It is the one owner of the passthrough rules: what the kernel lists now decides the container's
device fragment, at every boot. mknod needs root: skipped otherwise.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.infra.conftest import ROLES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the script makes device nodes (mknod): needs root")

TEMPLATE = ROLES / "lxc_host/templates/usr/local/sbin/llmbox-nvidia-devices.j2"
VERSION = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {}  Release Build  (dvs-builder@U16-I2-C03-12-4)\n"
           "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")


def proc_devices(*chars: str) -> str:
    """/proc/devices text with these character devices (and a block one that only looks NVIDIA's)."""
    return "Character devices:\n  1 mem\n  5 /dev/tty\n" + "".join(f"{c}\n" for c in chars) + (
        "\nBlock devices:\n  8 sd\n239 nvidia-uvm-looks-like-a-block-device\n")


class Host:
    """A fake LXC host: fixture files, the rendered script, and a log of the modprobe calls."""

    def __init__(self, root: Path, modules: list[str]):
        self.root = root
        self.dev = root / "dev"
        self.proc_devices = root / "proc-devices"
        self.driver = root / "proc-driver-nvidia"
        self.container = root / "lxc/box"
        self.fragment = self.container / "nvidia.conf"
        self.libdir = self.container / "rootfs/usr/lib/x86_64-linux-gnu"
        self.bin = root / "bin"
        for folder in (self.dev, self.driver / "gpus", self.libdir, self.bin):
            folder.mkdir(parents=True)
        (self.bin / "modprobe").write_text(f'#!/bin/sh\necho "$@" >> {root}/modprobe.log\n')
        (self.bin / "modprobe").chmod(0o755)
        internals = yaml.safe_load((ROLES / "lxc_host/vars/main.yml").read_text())
        env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
        env.filters["quote"] = lambda value: shlex.quote(str(value))
        env.filters["comment"] = lambda value: "#\n# " + value + "\n#"
        script = env.from_string(TEMPLATE.read_text()).render(
            ansible_managed="Ansible managed", lxc_host_container_name="box", lxc_host_gpu_kernel_modules=modules,
            lxc_host_gpu_device_dir=str(self.dev), lxc_host_gpu_proc_devices=str(self.proc_devices),
            lxc_host_gpu_proc_driver_dir=str(self.driver), _lxc_host_gpu_fragment=str(self.fragment),
            _lxc_host_container_dir=str(self.container),
            _lxc_host_gpu_container_libdir=internals["_lxc_host_gpu_container_libdir"],
            _lxc_host_nvidia_frontend_major=internals["_lxc_host_nvidia_frontend_major"])
        self.script = root / "llmbox-nvidia-devices"
        self.script.write_text(script)
        self.script.chmod(0o755)

    def boot(self, devices: str, gpus: int = 1, driver: str | None = "580.65.06") -> subprocess.CompletedProcess:
        """Write the kernel's view (majors, GPUs, driver version), then run the script as the unit would."""
        self.proc_devices.write_text(devices)
        for i in range(gpus):
            (self.driver / f"gpus/0000:0{i + 1}:00.0").mkdir(exist_ok=True)
        if driver:
            (self.driver / "version").write_text(VERSION.format(driver))
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        return subprocess.run([str(self.script)], capture_output=True, text=True, env=env, timeout=60)

    def numbers(self, name: str) -> tuple[int, int]:
        st = (self.dev / name).stat()
        assert stat.S_ISCHR(st.st_mode), f"{name} is not a character device"
        return os.major(st.st_rdev), os.minor(st.st_rdev)

    def lines(self) -> list[str]:
        return self.fragment.read_text().splitlines()


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path, ["nvidia", "nvidia_uvm"])


def rules(major: int) -> list[str]:
    return [f"lxc.cgroup2.devices.allow = c {major}:* rwm", f"lxc.cgroup.devices.allow = c {major}:* rwm"]


def mount(host: Host, name: str, optional: bool = False, folder: bool = False) -> str:
    opts = ("optional," if optional else "") + ("create=dir" if folder else "create=file")
    return f"lxc.mount.entry = {host.dev}/{name} dev/{name} none bind,{opts} 0 0"


def test_first_boot_loads_the_modules_makes_the_nodes_and_the_fragment(host):
    out = host.boot(proc_devices("195 nvidia-frontend", "237 nvidia-uvm"), gpus=2)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "changed"
    assert (host.root / "modprobe.log").read_text().split() == ["nvidia", "nvidia_uvm"]
    assert {n: host.numbers(n) for n in ["nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm", "nvidia-uvm-tools"]} == {
        "nvidiactl": (195, 255), "nvidia0": (195, 0), "nvidia1": (195, 1), "nvidia-uvm": (237, 0),
        "nvidia-uvm-tools": (237, 1)}
    lines = host.lines()
    for line in [*rules(195), *rules(237)]:
        assert line in lines
    assert not any("239" in line for line in lines), "a block device's major must not be allowed"
    # Required nodes: no "optional", so the container does not start without them.
    for name in ["nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"]:
        assert mount(host, name) in lines
    assert mount(host, "nvidia-uvm-tools", optional=True) in lines


def test_a_second_run_changes_nothing(host):
    devices = proc_devices("195 nvidia-frontend", "237 nvidia-uvm")
    assert host.boot(devices).returncode == 0
    before = host.fragment.read_text()
    out = host.boot(devices)
    assert (out.returncode, out.stdout.strip()) == (0, "unchanged"), out.stderr
    assert host.fragment.read_text() == before


def test_a_new_uvm_major_after_a_reboot_replaces_the_old_rule_and_node(host):
    assert host.boot(proc_devices("195 nvidia-frontend", "237 nvidia-uvm")).returncode == 0
    out = host.boot(proc_devices("195 nvidia-frontend", "511 nvidia-uvm"))
    assert (out.returncode, out.stdout.strip()) == (0, "changed"), out.stderr
    lines = host.lines()
    assert all(line in lines for line in rules(511))
    assert not any(line in lines for line in rules(237))
    assert host.numbers("nvidia-uvm") == (511, 0)


def test_newer_drivers_name_the_frontend_nvidia_and_every_nvidia_major_is_allowed(host):
    (host.dev / "nvidia-caps").mkdir()
    out = host.boot(proc_devices("195 nvidia", "236 nvidia-nvswitch", "237 nvidia-uvm", "238 nvidia-caps"))
    assert out.returncode == 0, out.stderr
    lines = host.lines()
    for major in (195, 236, 237, 238):
        assert all(line in lines for line in rules(major))
    assert host.numbers("nvidiactl") == (195, 255)
    assert mount(host, "nvidia-caps", optional=True, folder=True) in lines


def test_without_nvidia_uvm_it_fails_and_the_container_cannot_start_without_it(host):
    out = host.boot(proc_devices("195 nvidia-frontend"))
    assert out.returncode == 1
    assert "nvidia-uvm is not loaded" in out.stderr and "modprobe nvidia_uvm" in out.stderr
    # Still written, and still requiring the node: lxc-start refuses instead of starting without CUDA.
    assert mount(host, "nvidia-uvm") in host.lines()
    assert rules(195)[0] in host.lines()


def test_without_the_driver_it_says_so(host):
    out = host.boot(proc_devices(), gpus=0, driver=None)
    assert out.returncode == 1
    assert "the NVIDIA kernel driver is not loaded" in out.stderr
    assert "cannot tell the host's NVIDIA driver version" in out.stderr
    assert all(line in host.lines() for line in rules(195))  # the frontend's fixed major


def test_a_failing_modprobe_is_reported(host):
    (host.bin / "modprobe").write_text("#!/bin/sh\necho \"modprobe: FATAL: Module $1 not found\" >&2\nexit 1\n")
    out = host.boot(proc_devices("195 nvidia-frontend", "237 nvidia-uvm"))
    assert out.returncode == 1
    assert "cannot load the kernel module nvidia " in out.stderr


def test_container_libraries_of_another_version_fail_with_both_versions_and_the_fix(host):
    (host.libdir / "libnvidia-ml.so.570.86.16").touch()
    (host.libdir / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.570.86.16")
    out = host.boot(proc_devices("195 nvidia-frontend", "237 nvidia-uvm"))
    assert out.returncode == 3
    assert "570.86.16" in out.stderr and "580.65.06" in out.stderr
    assert "ansible/site.yml --limit llmbox" in out.stderr
    assert mount(host, "nvidia-uvm") in host.lines()  # the devices are still passed through


def test_container_libraries_of_the_host_version_pass(host):
    (host.libdir / "libnvidia-ml.so.580.65.06").touch()
    out = host.boot(proc_devices("195 nvidia-frontend", "237 nvidia-uvm"))
    assert (out.returncode, out.stderr) == (0, "")
