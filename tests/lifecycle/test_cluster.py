"""The manager's ledger across nodes: three nodes of two 24 GB GPUs each, pins, a node lost, a node
leaving.

The cluster is a stand-in for what the node agents report (app/cluster/memory.py speaks to real
agents over Ray; here a dict of GPUs per node), and the fake Serve also plays the driver: each
engine takes its booked memory on the GPUs of the node its config is pinned to. The decisions
under test are the real manager's.
"""

import asyncio

from app.cluster.nodes import Node
from app.gpu.memory import Device
from app.lifecycle.states import State
from tests.lifecycle.fakes import FakeServe, make_manager, settle, use

SMALL = "    - id: {id}\n      source: /srv/{id}\n      serve: true\n      memory_gb: {gb}\n{extra}"
NODES = ("head", "n2", "n3")


def entries(*models: tuple[str, float], extra: str = "") -> str:
    return "".join(SMALL.format(id=i, gb=gb, extra=extra) for i, gb in models)


class Cluster:
    """Three nodes x two GPUs whose used memory follows the engines deployed there."""

    kind = "gpu"

    def __init__(self, serve: FakeServe, total_gb: float = 24.0) -> None:
        self.total = total_gb
        self.used = {(node, i): 0.0 for node in NODES for i in (0, 1)}
        self.up = {node: True for node in NODES}
        self.held: dict[str, tuple] = {}
        deploy, delete = serve.deploy, serve.delete

        def deploying(model_id, config, key, placement=None):
            deploy(model_id, config, key, placement)
            bundle = config["placement_group_config"]["bundles"][0]
            node = next(k.removeprefix("llmbox_node_") for k in bundle if k.startswith("llmbox_node_"))
            visible = [int(i) for i in config["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"].split(",")]
            self.held[model_id] = (node, visible, placement.per_device_gb)
            for index in visible:
                self.used[node, index] += placement.per_device_gb

        def deleting(model_id):
            delete(model_id)
            node, gpus, gb = self.held.pop(model_id, ("", [], 0))
            for index in gpus:
                self.used[node, index] -= gb

        serve.deploy, serve.delete = deploying, deleting

    def devices(self) -> list[Device]:
        return [Device(i, "NVIDIA L4", self.total, self.total - used, node)
                for (node, i), used in self.used.items() if self.up[node]]

    def nodes(self) -> list[Node]:
        return [Node(n, f"id-{n}", f"10.0.0.{k}", self.up[n], n == "head", None,
                     "" if self.up[n] else "health check failed") for k, n in enumerate(NODES, 1)]

    def process_gb(self, pids, node=""):
        return None

    def alive(self, node, processes):
        return [self.up[node]] * len(processes)


def cluster_manager(tmp_path, models, serve, cluster, **config):
    return make_manager(tmp_path, models, serve, memory=cluster, device="gpu", **config)


def placed(manager) -> dict[str, tuple[str, list[int]]]:
    return {m: (r.placement.node, list(r.placement.gpus)) for m, r in manager.models.items() if r.placement is not None}


def test_models_go_where_they_fit_best_across_nodes_and_tp_stays_on_one_node(tmp_path):
    serve = FakeServe()
    cluster = Cluster(serve)
    models = (entries(("big", 20.0), ("mid", 10.0), ("small", 3.0))
              + entries(("tp2", 30.0), extra="      engine: {tensor_parallel_size: 2}\n"))

    async def scenario():
        manager = cluster_manager(tmp_path, models, serve, cluster)
        await manager.reconcile()
        for model in ("big", "mid", "small", "tp2"):
            assert await use(manager, model) == "ready"
        return manager, await manager.status()

    manager, status = asyncio.run(scenario())
    # big fills head GPU 0 (4 GB left): small is the best fit there; mid takes head GPU 1 (14 left);
    # tp2 needs 15 GB on two GPUs of one node: only n2 (or n3) has them.
    assert placed(manager) == {"big": ("head", [0]), "mid": ("head", [1]), "small": ("head", [0]),
                               "tp2": ("n2", [0, 1])}
    bundle = serve.configs["tp2"]["placement_group_config"]["bundles"][0]
    assert (bundle["llmbox_node_n2"], bundle["llmbox_gpu_0"], bundle["llmbox_gpu_1"]) == (0.001, 15.0, 15.0)
    assert serve.configs["tp2"]["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    rows = {(d["node"], d["index"]): d for d in status["devices"]}
    assert len(rows) == 6 and rows["n2", 1]["booked_gb"] == 15.0 and rows["n3", 0]["booked_gb"] == 0.0
    assert [m["id"] for m in rows["head", 0]["models"]] == ["big", "small"]


def test_a_pinned_model_goes_only_to_its_nodes(tmp_path):
    serve = FakeServe()
    cluster = Cluster(serve)
    models = (entries(("on-n3", 4.0), extra="      nodes: [n3]\n")
              + entries(("nowhere", 4.0), extra="      nodes: [gone]\n"))

    async def scenario():
        manager = cluster_manager(tmp_path, models, serve, cluster, load_timeout_s=3600)  # refused at once, or never
        await manager.reconcile()
        assert await use(manager, "on-n3") == "ready"
        await manager.acquire("nowhere")
        return manager, await manager.wait("nowhere", 5, 0)

    manager, answer = asyncio.run(scenario())
    assert placed(manager)["on-n3"] == ("n3", [0])  # the head had room too
    assert answer["outcome"] == "refused"
    assert "'nowhere' is pinned to nodes gone: none of them is in the cluster now" in answer["model"]["last_error"]


def test_when_no_node_has_room_one_idle_model_makes_room_on_its_own_node(tmp_path):
    serve = FakeServe()
    cluster = Cluster(serve)
    full = [(f"m{i}", 20.0) for i in range(6)]
    models = entries(*full, ("new", 20.0))

    async def scenario():
        manager = cluster_manager(tmp_path, models, serve, cluster)
        await manager.reconcile()
        for model, _ in full:  # one per GPU; m3 is used first, so it has been idle longest
            assert await use(manager, model) == "ready"
            manager.clock.advance(10)
        await use(manager, "m4")
        manager.clock.advance(10)
        before = placed(manager)
        assert await use(manager, "new") == "ready"
        return manager, before

    manager, before = asyncio.run(scenario())
    victim = "m0"  # idle the longest, with the same reload cost as the others
    assert manager.counters.unloads == {(victim, "evicted"): 1}
    assert placed(manager)["new"] == before[victim]
    assert {m: p for m, p in placed(manager).items() if m != "new"} == {m: p for m, p in before.items() if m != victim}


def test_a_lost_node_unloads_its_models_with_the_reason_and_leaves_the_ledger(tmp_path):
    serve = FakeServe()
    cluster = Cluster(serve)
    models = entries(("a", 20.0), ("b", 20.0), ("c", 20.0), ("d", 20.0), ("e", 20.0))

    async def scenario():
        manager = cluster_manager(tmp_path, models, serve, cluster)
        await manager.reconcile()
        for model in ("a", "b", "c"):
            assert await use(manager, model) == "ready"
        await manager.watch_once()  # the manager has seen every node alive
        on_n2 = [m for m, (node, _) in placed(manager).items() if node == "n2"]
        cluster.up["n2"] = False
        await manager.watch_once()
        lost = {m: (manager.models[m].state, manager.models[m].last_error) for m in on_n2}
        await settle(manager)
        status = await manager.status()
        assert await use(manager, on_n2[0]) == "ready"  # the next request loads it where there is room
        return manager, on_n2, lost, status

    manager, on_n2, lost, status = asyncio.run(scenario())
    assert on_n2 == ["c"]  # a and b filled the head
    assert lost == {"c": (State.UNLOADED, "its node n2 was lost (health check failed)")}
    assert manager.counters.unloads[("c", "node_lost")] == 1
    assert serve.deletes == ["c"]  # Serve's app is removed (a reload waits for that)
    assert [(e["model"], e["node"]) for e in manager.events.read(kind="node_lost")] == [("c", "n2")]
    assert {d["node"] for d in status["devices"]} == {"head", "n3"}  # n2's memory left the ledger
    assert placed(manager)["c"][0] == "n3"
    assert {m: manager.models[m].state for m in ("a", "b")} == {"a": State.READY, "b": State.READY}


def test_a_leaving_node_gets_nothing_new_and_its_models_are_unloaded(tmp_path):
    serve = FakeServe()
    cluster = Cluster(serve)
    models = entries(("a", 20.0), ("b", 20.0), ("c", 20.0), ("d", 20.0))

    async def scenario():
        manager = cluster_manager(tmp_path, models, serve, cluster)
        await manager.reconcile()
        for model in ("a", "b", "c"):
            await use(manager, model)
        answer = await manager.leave("n2")
        await use(manager, "d")
        return manager, answer

    manager, answer = asyncio.run(scenario())
    assert answer == {"node": "n2", "unloaded": ["c"]}
    assert manager.models["c"].state == State.UNLOADED
    assert placed(manager)["d"][0] == "n3"
    assert [e["node"] for e in manager.events.read(kind="node_leaving")] == ["n2"]
