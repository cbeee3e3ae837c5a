"""The fit estimate: hand-computed arithmetic, and estimates of repos read through the real client."""

import json

import pytest

from app.devtools.hub_standin import LLAMA_8B_CONFIG, LLAMA_70B_CONFIG, add_declared_model, fake_safetensors
from app.hub import fit
from app.hub.errors import BadRepoId, GatedRepo, RepoNotFound
from app.hub.fit import HostMemory

GIB = 1024**3
LLAMA_8B_PARAMS = 8_030_261_248  # Meta-Llama-3-8B's safetensors parameter count (BF16)
# Hand-computed for Llama-3-8B at its 8192 context, bf16:
KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V x layers x KV heads x head_dim x 2 bytes = 131072
WEIGHTS = LLAMA_8B_PARAMS * 2  # 16_060_522_496 bytes = 14.96 GiB
KV_8K = KV_PER_TOKEN * 8192  # exactly 1 GiB
NEED_TP1_GPU = (WEIGHTS + KV_8K) * 1.10 + 1.5 * GIB  # 19.05 GiB: +10% and 1.5 GiB per GPU


def test_llama_8b_arithmetic():
    assert fit.kv_bytes_per_token(LLAMA_8B_CONFIG) == 131072
    assert fit.model_context(LLAMA_8B_CONFIG) == 8192
    assert fit.weights_bytes({"BF16": LLAMA_8B_PARAMS}) == 16_060_522_496
    assert KV_8K == GIB
    assert fit.per_device_bytes(WEIGHTS + KV_8K, 1, "gpu") == pytest.approx(NEED_TP1_GPU)
    assert NEED_TP1_GPU / GIB == pytest.approx(19.053, abs=1e-3)
    # Split over 2 GPUs: half of weights and cache each, the fixed part on both.
    assert fit.per_device_bytes(WEIGHTS + KV_8K, 2, "gpu") == pytest.approx((WEIGHTS + KV_8K) / 2 * 1.1 + 1.5 * GIB)


def test_config_defaults_dtype_and_nesting():
    # No num_key_value_heads: every head has its own KV; no head_dim: hidden / heads.
    mha = {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768, "torch_dtype": "float32"}
    assert fit.kv_bytes_per_token(mha) == 2 * 12 * 12 * 64 * 4
    assert fit.element_bytes({"dtype": "bfloat16"}) == 2
    assert fit.element_bytes({}) == 2
    # Multimodal configs keep the language model under text_config.
    nested = {"architectures": ["Gemma3ForConditionalGeneration"], "text_config": LLAMA_8B_CONFIG}
    assert fit.kv_bytes_per_token(nested) == 131072
    assert fit.model_context(nested) == 8192
    assert fit.kv_bytes_per_token({"model_type": "unknown"}) is None


@pytest.mark.parametrize(
    ("host", "verdict", "tp", "enough"),
    [
        (HostMemory.gpus([("A", 24.0, 24.0)]), "fits", 1, True),  # 19.05 <= 0.85 x 24 = 20.4
        (HostMemory.gpus([("A", 20.0, 24.0)]), "tight", 1, True),  # 19.05 > 17.0 but <= 20
        (HostMemory.gpus([("A", 16.0, 16.0)] * 2), "fits", 2, True),  # 10.28 per GPU <= 13.6
        (HostMemory.gpus([("A", 16.0, 16.0)]), "does not fit", 2, False),  # would need a second GPU
        (HostMemory.cpu(16.0), "does not fit", 1, None),  # CPU: TP is always 1
        (HostMemory.cpu(64.0), "fits", 1, None),
    ],
)
def test_verdict_and_tensor_parallel_size(host, verdict, tp, enough):
    result = fit.estimate(host, weights=WEIGHTS, config=LLAMA_8B_CONFIG, params=LLAMA_8B_PARAMS)
    assert (result["verdict"], result["tensor_parallel_size"], result["enough_gpus"]) == (verdict, tp, enough)
    assert result["basis"] == "estimated"


def test_context_cap_shrinks_the_kv_cache(gpu24):
    full = fit.estimate(gpu24, weights=WEIGHTS, config=LLAMA_8B_CONFIG)
    capped = fit.estimate(gpu24, weights=WEIGHTS, config=LLAMA_8B_CONFIG, max_model_len=2048)
    assert (full["context"], full["kv_cache_gb"]) == (8192, 1.0)
    assert (capped["context"], capped["kv_cache_gb"]) == (2048, 0.25)
    assert capped["need_gb"] < full["need_gb"]


def test_measured_figure_replaces_the_estimate(gpu24):
    result = fit.estimate(gpu24, weights=WEIGHTS, config=LLAMA_8B_CONFIG, measured_gb=22.0)
    assert result["basis"] == "measured"
    assert result["need_gb"] == 22.0
    assert result["verdict"] == "tight"  # 22 > 0.85 x 24 (the estimate alone said "fits")


def test_estimate_repo_reads_safetensors_and_config(hub, api, gpu24):
    add_declared_model(hub, "meta-ish/llama-3-8b-shaped", LLAMA_8B_CONFIG)
    result = fit.estimate_repo(api, "meta-ish/llama-3-8b-shaped", host=gpu24)
    assert result["params"] == LLAMA_8B_PARAMS
    assert result["size_bytes"] == WEIGHTS
    assert (result["weights_gb"], result["kv_cache_gb"], result["need_gb"]) == (14.96, 1.0, 19.05)
    assert (result["verdict"], result["tensor_parallel_size"], result["basis"]) == ("fits", 1, "estimated")
    assert result["repo_id"] == "meta-ish/llama-3-8b-shaped" and result["revision"] == "main"


def test_too_big_repo_does_not_fit_and_suggests_tp(hub, api, gpu24):
    add_declared_model(hub, "meta-ish/llama-3-70b-shaped", LLAMA_70B_CONFIG)
    result = fit.estimate_repo(api, "meta-ish/llama-3-70b-shaped", host=gpu24)
    assert result["verdict"] == "does not fit"
    assert result["weights_gb"] > 130
    assert result["tensor_parallel_size"] == 8  # (131.4 + 2.5) GiB / 8 x 1.1 + 1.5 = 19.9 <= 20.4
    assert result["enough_gpus"] is False


def test_headers_read_by_range_when_the_hub_has_no_safetensors_index(hub, api, gpu24):
    header, size = fake_safetensors({"w": ("F32", [1000, 1000])})
    hub.add_repo("acme/unindexed", {"model.safetensors": header, "config.json": b"{}"},
                 declared_sizes={"model.safetensors": size}, safetensors_info=False)
    result = fit.estimate_repo(api, "acme/unindexed", host=gpu24)
    assert result["params"] == 1_000_000
    assert result["size_bytes"] == 4_000_000
    assert hub.range_requests >= 1  # get_safetensors_metadata read the header, not the file


def test_bin_only_repo_is_estimated_from_file_sizes(hub, api, gpu24):
    files = {"pytorch_model.bin": b"\0" * 1000, "config.json": json.dumps(LLAMA_8B_CONFIG).encode()}
    hub.add_repo("acme/old-bin", files, declared_sizes={"pytorch_model.bin": 3 * GIB})
    result = fit.estimate_repo(api, "acme/old-bin", host=gpu24)
    assert result["size_bytes"] == 3 * GIB and result["params"] is None
    assert "no safetensors" in result["note"]
    assert result["weights_gb"] == 3.0 and result["kv_cache_gb"] == 1.0


def test_errors_are_clear(hub, api, gpu24):
    hub.add_repo("acme/gated", {"config.json": b"{}"}, gated=True)
    with pytest.raises(RepoNotFound, match="acme/missing"):
        fit.estimate_repo(api, "acme/missing", host=gpu24)
    with pytest.raises(BadRepoId):
        fit.estimate_repo(api, "acme/../etc", host=gpu24)
    with pytest.raises(GatedRepo, match="token"):
        fit.estimate_repo(api, "acme/gated", host=gpu24)  # metadata is public, config.json is not
