"""The box's nodes as Ray knows them: one owner of how a node declares itself to the box.

Every llmbox node (the head, each worker that joined) starts Ray with a custom resource
``llmbox_node_<name>`` (app/ray_head.py); that is how the manager tells the box's nodes apart from
any other Ray node, and how a model's placement group is pinned to the node admission chose
(app/engines/llm_config.py asks a sliver of it). A CPU node also declares its memory budget for
engines (``llmbox_cpu_budget_gb``) when the operator set one; a GPU node declares each GPU as
``llmbox_gpu_<index>`` (app/engines/llm_config.py owns that name).
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_RESOURCE_PREFIX = "llmbox_node_"
CPU_BUDGET_RESOURCE = "llmbox_cpu_budget_gb"
NODE_SHARE = 0.001  # of a node's llmbox_node_<name> resource: what pins an actor or bundle to it
HEAD_RESOURCE = "node:__internal_head__"  # Ray's own resource of the head node


def node_resource(name: str) -> str:
    return f"{NODE_RESOURCE_PREFIX}{name}"


def node_resources(name: str, cpu_budget_gb: float | None) -> dict[str, float]:
    """What a node declares at ``ray start`` (besides its GPUs)."""
    resources = {node_resource(name): 1.0}
    if cpu_budget_gb:
        resources[CPU_BUDGET_RESOURCE] = float(cpu_budget_gb)
    return resources


@dataclass(frozen=True)
class Node:
    """One llmbox node as Ray reports it now."""

    name: str
    node_id: str  # Ray's id: a node that joins again under the same name gets a new one
    address: str  # its address on the cluster network (what its replicas listen on)
    alive: bool
    head: bool
    cpu_budget_gb: float | None  # declared at its start, else None (75% of its RAM)
    death: str = ""  # why Ray marked it dead


def parse(ray_nodes: list[dict]) -> list[Node]:
    """The llmbox nodes among ``ray.nodes()`` (nodes without an llmbox name are not the box's).

    A name may appear more than once: a node that died and joined again. The newest live entry wins."""
    found: dict[str, Node] = {}
    for raw in ray_nodes:
        resources = raw.get("Resources") or {}
        names = [k[len(NODE_RESOURCE_PREFIX):] for k in resources if k.startswith(NODE_RESOURCE_PREFIX)]
        if not names:
            continue
        node = Node(name=names[0], node_id=raw.get("NodeID", ""), address=raw.get("NodeManagerAddress", ""),
                    alive=bool(raw.get("Alive")), head=HEAD_RESOURCE in resources,
                    cpu_budget_gb=resources.get(CPU_BUDGET_RESOURCE),
                    death=raw.get("DeathReasonMessage") or "")
        before = found.get(node.name)
        if before is None or (node.alive and not before.alive):
            found[node.name] = node
    return sorted(found.values(), key=lambda n: (not n.head, n.name))


def read() -> list[Node]:
    """The box's nodes now (one GCS call)."""
    import ray

    return parse(ray.nodes())
