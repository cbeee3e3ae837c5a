"""How the box tells its nodes apart in what Ray reports (app/cluster/nodes.py), the command lines
a node starts Ray with (app/ray_head.py), and what ./start.sh join says when it lacks what it
needs: no Ray started."""

import os
import subprocess
import sys

from app import ray_head
from app.cluster.nodes import parse
from app.settings import Settings
from tests.conftest import ROOT


def raw(node_id, name=None, alive=True, head=False, address="10.0.0.2", **resources):
    if name:
        resources[f"llmbox_node_{name}"] = 1.0
    if head:
        resources["node:__internal_head__"] = 1.0
    return {"NodeID": node_id, "NodeManagerAddress": address, "Alive": alive,
            "Resources": resources if alive else {}, "DeathReasonMessage": "" if alive else "missed heartbeats"}


def test_nodes_are_named_by_their_llmbox_resource_and_a_dead_one_keeps_its_name():
    known: dict[str, str] = {}
    first = parse([raw("a", "head", head=True, address="10.0.0.1"), raw("b", "w1", llmbox_cpu_budget_gb=12.0),
                   raw("c")], known)  # c: a Ray node that is not the box's
    assert [(n.name, n.head, n.alive, n.cpu_budget_gb) for n in first] == [("head", True, True, None),
                                                                          ("w1", False, True, 12.0)]
    later = parse([raw("a", "head", head=True), raw("b", alive=False)], known)  # Ray drops a dead node's resources
    assert [(n.name, n.alive, n.death) for n in later] == [("head", True, ""), ("w1", False, "missed heartbeats")]
    rejoined = parse([raw("a", "head", head=True), raw("b", alive=False), raw("d", "w1")], known)
    assert [(n.name, n.node_id, n.alive) for n in rejoined] == [("head", "a", True), ("w1", "d", True)]


def test_a_head_on_the_cluster_network_runs_multi_node_and_a_worker_joins_it(tmp_path):
    single = Settings(state_dir=tmp_path / "s", node_name="box")
    assert "--node-ip-address=127.0.0.1" in ray_head.command(single)
    assert ray_head.ray_variables(single)["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"

    head = Settings(state_dir=tmp_path / "h", cluster_ip="10.0.0.1", node_name="head", cpu_memory_budget_gb=20)
    cmd = ray_head.command(head)
    assert "--head" in cmd and "--node-ip-address=10.0.0.1" in cmd
    assert '--resources={"llmbox_cpu_budget_gb": 20.0, "llmbox_node_head": 1.0}' in cmd
    variables = ray_head.ray_variables(head)
    assert (variables["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"], variables["RAY_ADDRESS"]) == ("1", f"10.0.0.1:{head.ray_port}")
    assert variables["RAY_health_check_failure_threshold"] == "3"  # a lost node is noticed in ~3 s

    worker = Settings(state_dir=tmp_path / "w", cluster_ip="10.0.0.2", node_name="w1")
    cmd = ray_head.command(worker, join="10.0.0.1:6379")
    assert "--head" not in cmd and "--address=10.0.0.1:6379" in cmd and "--node-ip-address=10.0.0.2" in cmd
    assert '--resources={"llmbox_node_w1": 1.0}' in cmd


def run_box(tmp_path, *args, **env):
    """``./start.sh ARGS`` on a machine with nothing running, as a user would run it."""
    variables = {k: v for k, v in os.environ.items() if k != "LLMBOX_CLUSTER_IP"}
    variables.update(LLMBOX_STATE_DIR=str(tmp_path / "var"), **env)
    return subprocess.run([sys.executable, "-m", "app.box", *args], env=variables, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_join_without_the_token_or_an_address_says_what_to_do(tmp_path):
    no_token = run_box(tmp_path, "join", "10.0.0.1", "--ip", "10.0.0.2")
    assert no_token.returncode == 2
    assert "no cluster token: run ./start.sh token-for-worker on the head" in no_token.stdout
    no_address = run_box(tmp_path, "join", "10.0.0.1", LLMBOX_JOIN_TOKEN="ab" * 32)
    assert no_address.returncode == 1 and "a worker needs LLMBOX_CLUSTER_IP" in no_address.stdout
    assert "ab" * 32 not in no_address.stdout + no_address.stderr
    single = run_box(tmp_path, "token-for-worker")
    assert single.returncode == 2 and "set LLMBOX_CLUSTER_IP to its address on the cluster network" in single.stdout
