"""The bridge filter: from outside the host only the published ports reach the container (and the
replies to its own connections); the container still reaches the outside (its apt and pip ran).

"Outside" is a network namespace wired to the host by a veth pair, with a route to the bridge's
subnet through the host: packets from it are forwarded exactly as a LAN neighbour's would be."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)

NETNS = "lbxoutside"
HOST_SIDE, NS_SIDE = "lbxout0", "lbxout1"
LINK = ("10.87.254.1", "10.87.254.2")
UNPUBLISHED = 9471  # a port the test listens on inside the container, not in lxc_host_published_ports

CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4); print('open')"


def sh(*argv: str, check: bool = True, timeout: int = 30) -> subprocess.CompletedProcess:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    assert not check or out.returncode == 0, f"{' '.join(argv)}: {out.stderr}"
    return out


def reachable(address: str, port: int, netns: str | None = None) -> bool:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return sh(*prefix, sys.executable, "-c", CONNECT, address, str(port), check=False).stdout.strip() == "open"


@pytest.fixture(scope="module")
def container_ip(settings) -> str:
    return settings["lxc_host_container_address"].split("/")[0]


@pytest.fixture(scope="module")
def outside(settings):
    """A neighbour on another link, routing to the bridge's subnet through this host."""
    subnet = settings["lxc_host_container_address"].rsplit(".", 1)[0] + ".0/24"
    sh("ip", "netns", "del", NETNS, check=False)
    sh("ip", "netns", "add", NETNS)
    try:
        sh("ip", "link", "add", HOST_SIDE, "type", "veth", "peer", "name", NS_SIDE, "netns", NETNS)
        sh("ip", "addr", "add", f"{LINK[0]}/30", "dev", HOST_SIDE)
        sh("ip", "link", "set", HOST_SIDE, "up")
        for cmd in (["addr", "add", f"{LINK[1]}/30", "dev", NS_SIDE], ["link", "set", NS_SIDE, "up"],
                    ["link", "set", "lo", "up"], ["route", "add", subnet, "via", LINK[0]]):
            sh("ip", "netns", "exec", NETNS, "ip", *cmd)
        yield NETNS
    finally:
        sh("ip", "netns", "del", NETNS, check=False)
        sh("ip", "link", "del", HOST_SIDE, check=False)


@pytest.fixture(scope="module")
def unpublished_listener(settings, container_ip):
    """A listener on all the container's addresses, on a port that is not published."""
    proc = subprocess.Popen(["lxc-attach", "--name", settings["lxc_host_container_name"], "--", "timeout", "120",
                             "python3", "-m", "http.server", "--bind", "0.0.0.0", str(UNPUBLISHED)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not reachable(container_ip, UNPUBLISHED) and time.monotonic() < deadline:
            time.sleep(0.5)
        yield UNPUBLISHED
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ruleset_is_loaded_with_only_the_published_ports(settings):
    table = sh("nft", "list", "table", "ip", "llmbox_lxc").stdout
    bridge = settings["lxc_host_bridge"]
    assert "hook forward" in table and "hook input" in table and "masquerade" in table
    assert f'oifname "{bridge}" iifname != "{bridge}" jump to_container' in table
    chain = table.split("chain to_container {", 1)[1].split("\n\t}", 1)[0]
    ports = ", ".join(str(p) for p in sorted(set(settings["lxc_host_published_ports"])))
    assert f"tcp dport {{ {ports} }} accept" in chain, chain
    assert chain.rstrip().endswith("drop"), chain


def test_unpublished_port_answers_on_the_host_but_not_from_outside(outside, container_ip, unpublished_listener):
    assert reachable(container_ip, unpublished_listener), "the test's listener did not start in the container"
    assert not reachable(container_ip, unpublished_listener, netns=outside), (
        f"port {unpublished_listener} of the container is reachable from outside the host")


def test_published_port_is_reachable_from_outside(outside, container_ip):
    port = int(expected()["llmbox_app_serve_port"])
    if port not in set(expected()["lxc_host_published_ports"]):
        pytest.skip(f"{port} is not published in this inventory")
    assert reachable(container_ip, port), f"nothing listens on {container_ip}:{port} (llmbox_app_host loopback?)"
    assert reachable(container_ip, port, netns=outside), f"published port {port} is not reachable from outside"


def test_container_reaches_outside(container):
    """Egress is not filtered: the container resolves and connects out (as its apt and pip did)."""
    out = container.run("python3 -c \"import socket; socket.create_connection(('deb.debian.org', 80), timeout=10)\"")
    assert out.rc == 0, out.stderr


def test_ray_ports_are_open_only_from_the_cluster_subnets(settings):
    """Ray between hosts: its ports pass the filter from lxc_host_cluster_subnets only (and nothing from there
    is masqueraded); from anywhere else they are dropped like every unpublished port."""
    subnets = settings["lxc_host_cluster_subnets"]
    if not subnets:
        pytest.skip("lxc_host_cluster_subnets is empty in this inventory: no Ray port is opened")
    table = sh("nft", "list", "table", "ip", "llmbox_lxc").stdout
    chain = table.split("chain to_container {", 1)[1].split("\n\t}", 1)[0]
    ports = settings["lxc_host_cluster_ports"]
    ray = [line.strip() for line in chain.splitlines() if str(ports[0]) in line]
    assert len(ray) == 1 and ray[0].startswith("ip saddr ") and ray[0].endswith("accept"), chain
    assert covers(ray[0].split(" tcp dport", 1)[0], subnets), ray[0]
    masquerade = next(line for line in table.splitlines() if "masquerade" in line)
    assert covers(masquerade.split("daddr !=", 1)[1], subnets), masquerade


def covers(nft_addresses: str, subnets: list[str]) -> bool:
    """Whether nft's address list (CIDRs or first-last ranges; nft merges adjacent ones) holds each subnet."""
    import ipaddress
    import re

    spans = []
    for item in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+|-\d+\.\d+\.\d+\.\d+)?", nft_addresses):
        if "-" in item:
            first, last = (ipaddress.IPv4Address(a) for a in item.split("-"))
        else:
            net = ipaddress.IPv4Network(item, strict=False)
            first, last = net[0], net[-1]
        spans.append((first, last))
    return all(any(f <= ipaddress.IPv4Network(s)[0] and ipaddress.IPv4Network(s)[-1] <= l for f, l in spans)
               for s in subnets)
