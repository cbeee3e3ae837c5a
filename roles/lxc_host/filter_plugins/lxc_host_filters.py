"""Filters of the lxc_host role: subnet checks.

(The NVIDIA device rules have one owner, the boot script templates/usr/local/sbin/llmbox-nvidia-devices.j2:
nvidia-uvm's major can change from boot to boot, so the rules are made at boot, not by Ansible.)
"""

from __future__ import annotations

import ipaddress


def ipv4_network(cidr: str) -> str:
    """The network of an interface address in CIDR form: 10.87.0.1/24 -> 10.87.0.0/24."""
    return str(ipaddress.IPv4Interface(cidr).network)


class FilterModule:
    def filters(self):
        return {"ipv4_network": ipv4_network}
