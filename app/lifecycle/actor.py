"""The model manager as a named, detached Ray actor that Ray restarts when it dies.

After a restart Ray runs ``__init__`` again; the actor then starts itself (recovering from Serve's
applications and the registry, app/lifecycle/manager.py ``start``), so nobody has to notice.
"""

from __future__ import annotations

from app.cluster.nodes import HEAD_RESOURCE, NODE_SHARE
from app.lifecycle.manager import ModelManager
from app.lifecycle.runtime import ManagerConfig
from app.ray_head import NAMESPACE

ACTOR_NAME = "llmbox-manager"


class ManagerActor(ModelManager):
    def __init__(self, config: ManagerConfig) -> None:
        import ray

        from app.cluster.memory import ClusterMemory

        # Every node's memory through its agent (a single box is a cluster of one node).
        super().__init__(config, memory=ClusterMemory("gpu" if config.device == "gpu" else "cpu"))
        # A call to itself, queued behind __init__: the first thing the (re)started actor does.
        ray.get_runtime_context().current_actor.start.remote()


def spawn(config: ManagerConfig):
    """Create (or find) the detached manager actor and return its handle."""
    import ray

    actor = ray.remote(ManagerActor).options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=1000, max_restarts=-1,
        resources={HEAD_RESOURCE: NODE_SHARE},  # on the head, with the registry and the state dir
    )
    return actor.remote(config)


def handle():
    """The running manager actor."""
    import ray

    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
