"""The manager's per-GPU ledger: where each model goes, what it books, and what makes room.

The GPUs are FakeNvml devices (the only stand-in: there is no GPU here); the fake Serve below
also plays the driver, taking each engine's booked memory on the GPUs its config names, as vLLM
does with the budget it is told. The decisions under test are the real manager's.
"""

import asyncio

from app.devtools.fake_nvml import FakeGpu, FakeNvml
from app.gpu.memory import NvmlMemory
from tests.lifecycle.fakes import FakeServe, make_manager, settle, use

SMALL = "    - id: {id}\n      source: /srv/{id}\n      serve: true\n      memory_gb: {gb}\n{extra}"


def entries(*models: tuple[str, float], extra: str = "") -> str:
    return "".join(SMALL.format(id=i, gb=gb, extra=extra) for i, gb in models)


class Gpus:
    """Two 24 GB GPUs whose used memory follows what the deployed engines were told to take."""

    def __init__(self, serve: FakeServe, *totals: float) -> None:
        self.devices = [FakeGpu(name=f"NVIDIA L4-{i}", total_gb=t) for i, t in enumerate(totals or (24.0, 24.0))]
        self.memory = NvmlMemory(FakeNvml(self.devices))
        self.held: dict[str, tuple] = {}
        deploy, delete = serve.deploy, serve.delete

        def deploying(model_id, config, key, placement=None):
            deploy(model_id, config, key, placement)
            visible = config["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"]
            self.held[model_id] = ([int(i) for i in visible.split(",")], placement.per_device_gb)
            for index in self.held[model_id][0]:
                self.devices[index].used_gb += placement.per_device_gb

        def deleting(model_id):
            delete(model_id)
            gpus, gb = self.held.pop(model_id, ([], 0))
            for index in gpus:
                self.devices[index].used_gb -= gb

        serve.deploy, serve.delete = deploying, deleting


def gpu_manager(tmp_path, models, serve, gpus, **config):
    return make_manager(tmp_path, models, serve, memory=gpus.memory, device="gpu", **config)


def placed(manager) -> dict[str, list[int]]:
    return {m: list(r.placement.gpus) for m, r in manager.models.items() if r.placement is not None}


def test_small_models_share_one_gpu_and_the_next_goes_where_it_fits(tmp_path):
    serve = FakeServe()
    gpus = Gpus(serve)
    models = entries(("embed", 1.5), ("chat-a", 3.5), ("chat-b", 3.5), ("big", 18.0))

    async def scenario():
        manager = gpu_manager(tmp_path, models, serve, gpus)
        await manager.reconcile()
        for model in ("embed", "chat-a", "chat-b", "big"):
            assert await use(manager, model) == "ready"
        return manager, await manager.status()

    manager, status = asyncio.run(scenario())
    # Best fit: the three small ones fill GPU 0; the big one does not fit its 15.5 GB left.
    assert placed(manager) == {"embed": [0], "chat-a": [0], "chat-b": [0], "big": [1]}
    assert serve.configs["big"]["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert serve.configs["big"]["placement_group_config"]["bundles"][0]["llmbox_gpu_1"] == 18.0
    assert serve.configs["chat-a"]["engine_kwargs"]["gpu_memory_utilization"] == 0.1459  # 3.5 / 24, rounded up
    assert manager.counters.unloads == {}  # nothing was evicted: every model is resident
    ledger = {d["index"]: d for d in status["devices"]}
    assert [m["id"] for m in ledger[0]["models"]] == ["embed", "chat-a", "chat-b"]
    assert (ledger[0]["booked_gb"], ledger[1]["booked_gb"]) == (8.5, 18.0)
    assert ledger[0]["room_gb"] == 15.5


def test_a_tensor_parallel_model_gets_distinct_gpus(tmp_path):
    serve = FakeServe()
    gpus = Gpus(serve, 24.0, 24.0, 24.0)
    models = entries(("small", 6.0)) + entries(("tp2", 30.0), extra="      engine: {tensor_parallel_size: 2}\n")

    async def scenario():
        manager = gpu_manager(tmp_path, models, serve, gpus)
        await manager.reconcile()
        await use(manager, "small")
        await use(manager, "tp2")
        return manager

    manager = asyncio.run(scenario())
    # 15 GB on each of two GPUs; GPU 0 has 18 GB left after "small", so it is one of the fullest that fit.
    assert placed(manager)["tp2"] == [0, 1]
    bundle = serve.configs["tp2"]["placement_group_config"]["bundles"][0]
    assert (bundle["llmbox_gpu_0"], bundle["llmbox_gpu_1"]) == (15.0, 15.0)
    assert serve.configs["tp2"]["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_what_could_never_fit_is_refused_at_once_with_the_reason(tmp_path):
    serve = FakeServe(polls=10**6)  # a load that got this far would never end: the test would hang
    gpus = Gpus(serve)
    models = (entries(("huge", 30.0)) + entries(("tp4", 8.0), extra="      engine: {tensor_parallel_size: 4}\n"))

    async def scenario():
        manager = gpu_manager(tmp_path, models, serve, gpus, load_timeout_s=3600)
        await manager.reconcile()
        answers = {}
        for model in ("huge", "tp4"):
            await manager.acquire(model)
            answers[model] = await manager.wait(model, 5, 0)
        return answers

    answers = asyncio.run(scenario())
    assert {m: a["outcome"] for m, a in answers.items()} == {"huge": "refused", "tp4": "refused"}
    assert ("not enough memory for 'huge': needs 30.0 GB on one GPU; GPU 0: 24.0 GB free of 24.0 GB, "
            "GPU 1: 24.0 GB free of 24.0 GB") in answers["huge"]["model"]["last_error"]
    assert "'tp4' needs 4 GPUs (tensor_parallel_size 4) on one node; this host has 2" in answers["tp4"]["model"]["last_error"]
    assert serve.deploys == []  # nothing was left pending in Serve


def test_room_is_made_on_the_gpu_where_it_helps(tmp_path):
    serve = FakeServe()
    gpus = Gpus(serve, 24.0, 24.0)
    models = entries(("a", 20.0), ("b", 14.0), ("c", 8.0), ("d", 12.0))

    async def scenario():
        manager = gpu_manager(tmp_path, models, serve, gpus)
        await manager.reconcile()
        for model in ("a", "b", "c"):
            await use(manager, model)  # a on GPU 0 (4 left); b on GPU 1 (10 left), c on GPU 1 (2 left)
        before = placed(manager)
        await use(manager, "d")  # 12 GB: evicting a (GPU 0) makes room; evicting c alone would not
        return before, placed(manager), manager

    before, after, manager = asyncio.run(scenario())
    assert before == {"a": [0], "b": [1], "c": [1]}
    assert after == {"b": [1], "c": [1], "d": [0]}
    assert manager.counters.unloads == {("a", "evicted"): 1}


def test_memory_is_attributed_by_placement_and_a_mig_gpu_never_fails_a_load(tmp_path):
    serve = FakeServe()
    gpus = Gpus(serve, 80.0)
    gpus.devices[0].mig = True  # the per-process query raises for a service user
    gpus.devices[0].used_gb = 1.0  # someone else's process
    models = entries(("a", 6.0))

    async def scenario():
        manager = gpu_manager(tmp_path, models, serve, gpus)
        await manager.reconcile()
        state = await use(manager, "a")
        return manager, state

    manager, state = asyncio.run(scenario())
    assert state == "ready"
    rt = manager.models["a"]
    assert rt.memory_gb == 6.0  # what GPU 0 holds now less what it held before a's deploy
    view = rt.view(0)
    assert (view["gpus"], view["budget_gb"], view["memory_measured"]) == ([0], 6.0, True)


def test_a_restarted_manager_keeps_each_model_where_it_runs(tmp_path):
    serve = FakeServe()
    gpus = Gpus(serve)
    models = entries(("a", 20.0), ("b", 10.0))

    async def scenario():
        first = gpu_manager(tmp_path, models, serve, gpus)
        await first.reconcile()
        await use(first, "a")
        await use(first, "b")
        await settle(first)
        second = gpu_manager(tmp_path, models, serve, gpus)  # the actor restarted; the engines run on
        await second.start()
        return placed(first), placed(second), await second.status()

    first, second, status = asyncio.run(scenario())
    assert first == second == {"a": [0], "b": [1]}
    assert [d["booked_gb"] for d in status["devices"]] == [20.0, 10.0]


def test_a_placement_ray_cannot_make_fails_the_load_at_once(tmp_path):
    serve = FakeServe(polls=10**6)  # Serve would report DEPLOYING for ever
    gpus = Gpus(serve)
    serve.infeasible["a"] = "Ray has no node with the resources its engine needs (llmbox_gpu_1 6)"

    async def scenario():
        manager = gpu_manager(tmp_path, entries(("a", 6.0)), serve, gpus, load_timeout_s=3600)
        await manager.reconcile()
        await manager.acquire("a")
        return await manager.wait("a", 5, 0), manager

    waited, manager = asyncio.run(scenario())
    assert waited["outcome"] == "failed"
    assert waited["model"]["last_error"] == ("could not be placed: Ray has no node with the resources its engine "
                                             "needs (llmbox_gpu_1 6)")
    assert serve.deletes == ["a"] and manager.models["a"].placement is None  # nothing left booked or pending
