"""The lxc_host role's filters: NVIDIA majors from /proc/devices, device rules, subnets."""

import importlib.util

import pytest

from tests.infra.conftest import ROLES

_spec = importlib.util.spec_from_file_location("lxc_host_filters", ROLES / "lxc_host/filter_plugins/lxc_host_filters.py")
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

PROC_DEVICES = """Character devices:
  1 mem
  4 /dev/vc/0
195 nvidia-frontend
236 nvidia-nvswitch
237 nvidia-uvm
238 nvidia-caps
254 rtc

Block devices:
  8 sd
239 nvidia-uvm-looks-like-a-block-device
"""


def test_majors_are_read_from_the_character_section_only():
    assert filters.nvidia_char_majors(PROC_DEVICES) == {
        "nvidia-frontend": 195, "nvidia-nvswitch": 236, "nvidia-uvm": 237, "nvidia-caps": 238,
    }


def test_newer_drivers_name_the_frontend_nvidia():
    majors = filters.nvidia_char_majors("Character devices:\n195 nvidia\n511 nvidia-uvm\n")
    assert filters.nvidia_device_rules(majors) == ["c 195:* rwm", "c 511:* rwm"]


def test_rules_cover_every_nvidia_major_once():
    rules = filters.nvidia_device_rules(filters.nvidia_char_majors(PROC_DEVICES))
    assert rules == ["c 195:* rwm", "c 236:* rwm", "c 237:* rwm", "c 238:* rwm"]


def test_without_nvidia_lines_only_the_fixed_frontend_major_is_allowed():
    assert filters.nvidia_char_majors("Character devices:\n  1 mem\n") == {}
    assert filters.nvidia_device_rules({}) == ["c 195:* rwm"]


@pytest.mark.parametrize(("cidr", "network"), [("10.87.0.1/24", "10.87.0.0/24"), ("10.87.0.10/16", "10.87.0.0/16")])
def test_ipv4_network(cidr, network):
    assert filters.ipv4_network(cidr) == network
