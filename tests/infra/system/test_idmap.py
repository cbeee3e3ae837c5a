"""The container is unprivileged: its root (and every service user) is a host id of the range
lxc_host_idmap_base.. (lxc.idmap), not host root. Seen from the host: the config, the init process's
uid, the owner of the rootfs and of the service's processes; seen from inside: the uid map."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)
if not expected()["lxc_host_unprivileged"]:
    pytest.skip("lxc_host_unprivileged is off in this inventory", allow_module_level=True)


def status_ids(pid: int, field: str) -> list[int]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(f"{field}:"))
    return [int(v) for v in line.split()[1:]]


@pytest.fixture(scope="module")
def idmap(settings) -> tuple[int, int]:
    return int(settings["lxc_host_idmap_base"]), int(settings["lxc_host_idmap_count"])


@pytest.fixture(scope="module")
def init_pid(settings) -> int:
    out = subprocess.run(["lxc-info", "--name", settings["lxc_host_container_name"], "--pid", "--no-humanize"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip().isdigit(), out.stderr
    return int(out.stdout)


def test_config_maps_root_and_every_service_user(settings, idmap):
    base, count = idmap
    config = Path(f"/var/lib/lxc/{settings['lxc_host_container_name']}/config").read_text().splitlines()
    assert f"lxc.idmap = u 0 {base} {count}" in config and f"lxc.idmap = g 0 {base} {count}" in config


def test_the_range_is_roots_in_subuid_and_subgid(idmap):
    base, count = idmap
    for path in ("/etc/subuid", "/etc/subgid"):
        assert f"root:{base}:{count}" in Path(path).read_text().splitlines(), path


def test_container_init_is_not_host_root(init_pid, idmap):
    base, _ = idmap
    assert status_ids(init_pid, "Uid") == [base] * 4
    assert status_ids(init_pid, "Gid") == [base] * 4


def test_inside_root_is_mapped(container, idmap):
    base, count = idmap
    assert container.run("cat /proc/self/uid_map").stdout.split() == ["0", str(base), str(count)]
    assert container.run("id -u").stdout.strip() == "0"


def test_rootfs_belongs_to_the_containers_root(settings, idmap):
    base, _ = idmap
    rootfs = Path(f"/var/lib/lxc/{settings['lxc_host_container_name']}/rootfs")
    for path in (rootfs, rootfs / "etc/os-release", rootfs / "etc/hostname", rootfs / "usr/bin/su"):
        assert (path.stat().st_uid, path.stat().st_gid) == (base, base), path
    assert (rootfs / "usr/bin/su").stat().st_mode & 0o4000, "setuid bits survive the shifted unpack"


def test_service_processes_run_as_the_mapped_service_user(container, settings, idmap):
    base, _ = idmap
    uid = int(container.run(f"id -u {settings['llmbox_app_user']}").stdout)
    # The host sees the container's processes: the box's (API, UI, Ray head) are host uid base + its uid.
    owners = {status_ids(int(p.name), "Uid")[0] for p in Path("/proc").iterdir()
              if p.name.isdigit() and _cmd(p).startswith(b"/opt/llmbox/venv/bin/python")}
    assert owners == {base + uid}, f"host uids of the box's processes: {owners}"


def _cmd(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_the_data_folder_belongs_to_the_container(settings, idmap):
    base, count = idmap
    data = Path(settings["lxc_host_data_dir"]).stat()
    assert base <= data.st_uid < base + count, f"{settings['lxc_host_data_dir']} belongs to host uid {data.st_uid}"


@pytest.mark.skipif(not expected()["lxc_host_gpu_passthrough"], reason="passthrough is off in this inventory")
@pytest.mark.parametrize("node", ["nvidia0", "nvidiactl", "nvidia-uvm"])
def test_service_user_may_open_the_bound_gpu_nodes(container, settings, node):
    """The nodes are host root's (nobody inside): usable through their 0666 mode. The scenario's are
    fake (no driver behind the major), so a permitted open fails with ENXIO, a refused one with EACCES."""
    out = container.run(f"runuser -u {settings['llmbox_app_user']} -- sh -c 'exec 3<>/dev/{node}'")
    assert out.rc == 0 or "No such device or address" in out.stderr, f"/dev/{node}: {out.stderr}"
    assert "Permission denied" not in out.stderr
