"""The lxc_host role's filters: subnets. (The NVIDIA device rules are the boot script's:
test_nvidia_devices.py.)"""

import importlib.util

import pytest

from tests.infra.conftest import ROLES

_spec = importlib.util.spec_from_file_location("lxc_host_filters", ROLES / "lxc_host/filter_plugins/lxc_host_filters.py")
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)


@pytest.mark.parametrize(("cidr", "network"), [("10.87.0.1/24", "10.87.0.0/24"), ("10.87.0.10/16", "10.87.0.0/16")])
def test_ipv4_network(cidr, network):
    assert filters.ipv4_network(cidr) == network
