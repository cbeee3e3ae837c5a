"""Filters of the lxc_host role: NVIDIA facts into LXC passthrough settings, and subnet checks.

`/proc/devices` lists each character device driver with the major number the kernel gave it.
nvidia-uvm (and nvidia-caps) get a dynamic major, different from host to host and boot to boot,
so it must be read there, never hard-coded.
"""

from __future__ import annotations

import ipaddress
import re

_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s*$")


def nvidia_char_majors(proc_devices: str) -> dict[str, int]:
    """{driver name: major} of the NVIDIA character devices listed in /proc/devices text."""
    majors: dict[str, int] = {}
    section = None
    for line in proc_devices.splitlines():
        if line.strip().endswith(":"):
            section = line.strip().lower()
            continue
        match = _LINE.match(line)
        if section == "character devices:" and match and match.group(2).startswith("nvidia"):
            majors[match.group(2)] = int(match.group(1))
    return majors


def nvidia_device_rules(majors: dict[str, int], frontend_default: int = 195) -> list[str]:
    """`c MAJOR:* rwm` rules for every NVIDIA major (the frontend's fixed 195 if none is listed)."""
    frontend = majors.get("nvidia-frontend", majors.get("nvidia", frontend_default))
    numbers = sorted({int(frontend), *(int(m) for m in majors.values())})
    return [f"c {major}:* rwm" for major in numbers]


def ipv4_network(cidr: str) -> str:
    """The network of an interface address in CIDR form: 10.87.0.1/24 -> 10.87.0.0/24."""
    return str(ipaddress.IPv4Interface(cidr).network)


class FilterModule:
    def filters(self):
        return {"nvidia_char_majors": nvidia_char_majors, "nvidia_device_rules": nvidia_device_rules,
                "ipv4_network": ipv4_network}
