"""The memory arithmetic (app/gpu/footprint.py) against published model configs, computed by hand."""

import pytest

from app.devtools.hub_standin import LLAMA_8B_CONFIG
from app.gpu import footprint
from app.gpu.footprint import GIB

# From the models' config.json on the hub (the fields the arithmetic reads).
QWEN25_05B = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "max_position_embeddings": 32768, "sliding_window": 32768,
              "use_sliding_window": False, "torch_dtype": "bfloat16"}
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "max_position_embeddings": 32768, "sliding_window": 131072,
             "use_sliding_window": False, "torch_dtype": "bfloat16"}
GEMMA3_27B = {"model_type": "gemma3", "text_config": {
    "model_type": "gemma3_text", "hidden_size": 5376, "num_hidden_layers": 62, "num_attention_heads": 32,
    "num_key_value_heads": 16, "head_dim": 128, "sliding_window": 1024, "sliding_window_pattern": 6,
    "max_position_embeddings": 131072}, "torch_dtype": "bfloat16"}
MISTRAL_V01 = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "max_position_embeddings": 32768, "sliding_window": 4096,
               "torch_dtype": "bfloat16"}
# Published parameter counts (safetensors metadata on the hub).
QWEN25_05B_PARAMS, QWEN25_7B_PARAMS, LLAMA3_8B_PARAMS = 494_032_768, 7_615_616_512, 8_030_261_248


def test_kv_per_token_is_layers_times_kv_heads_times_head_dim():
    assert footprint.kv_bytes_per_token(QWEN25_05B) == 2 * 24 * 2 * 64 * 2 == 12288
    assert footprint.kv_bytes_per_token(QWEN25_7B) == 2 * 28 * 4 * 128 * 2 == 57344
    assert footprint.kv_bytes_per_token(LLAMA_8B_CONFIG) == 2 * 32 * 8 * 128 * 2 == 131072


def test_weights_from_parameter_count_and_dtype():
    assert footprint.weights_bytes({"BF16": QWEN25_05B_PARAMS}) / GIB == pytest.approx(0.920, abs=1e-3)
    assert footprint.weights_bytes({"BF16": QWEN25_7B_PARAMS}) / GIB == pytest.approx(14.19, abs=0.01)
    assert footprint.weights_bytes({"BF16": LLAMA3_8B_PARAMS}) / GIB == pytest.approx(14.96, abs=0.01)
    # An fp32 checkpoint is cast to 16 bits by vLLM under dtype auto: counted once, not twice.
    assert footprint.weights_bytes({"F32": 1000}) == 2000
    assert footprint.weights_bytes({"F32": 1000}, dtype="float32") == 4000
    assert footprint.element_bytes({"torch_dtype": "float32"}) == 2


def test_kv_cache_counts_the_context_asked_for_not_the_models_maximum():
    # Llama-3.1-8B on a 24 GB card: at a 16k context (two sequences) it fits; at 128k it would not.
    llama31 = {**LLAMA_8B_CONFIG, "max_position_embeddings": 131072}
    weights = footprint.weights_bytes({"BF16": LLAMA3_8B_PARAMS})
    capped = footprint.budget(llama31, weights, max_model_len=16384)
    assert capped.kv_cache == 2 * 16384 * 131072 == 4 * GIB
    assert capped.per_device / GIB == pytest.approx((14.96 + 4) * 1.1 + 1.5, abs=0.01)  # 22.35
    full = footprint.budget(llama31, weights)
    assert full.context == 131072 and full.kv_cache == 32 * GIB


def test_sliding_window_layers_hold_only_their_window():
    # Gemma-3-27B: 10 of 62 layers global (every 6th), 52 slide over 1024 tokens.
    assert footprint.sliding_layers(GEMMA3_27B) == (52, 1024)
    per_layer_token = 2 * 16 * 128 * 2
    one = footprint.kv_bytes(GEMMA3_27B, 131072)
    assert one == 10 * per_layer_token * 131072 + 52 * per_layer_token * 1024
    assert one / GIB == pytest.approx(10.41, abs=0.01)  # counted as full attention: 62 GiB
    # Mistral v0.1: every layer slides; Qwen2.5 names a window it does not use.
    assert footprint.kv_bytes(MISTRAL_V01, 32768) == footprint.kv_bytes_per_token(MISTRAL_V01) * 4096
    assert footprint.sliding_layers(QWEN25_7B) == (0, None)
    # Transformers' explicit layer_types win over the pattern.
    typed = {**MISTRAL_V01, "layer_types": ["full_attention", "sliding_attention"] * 16}
    assert footprint.sliding_layers(typed) == (16, 4096)


def test_tensor_parallel_sizes_divide_the_heads():
    assert footprint.tp_sizes(QWEN25_7B, (1, 2, 4, 8)) == (1, 2, 4)  # 28 heads: no TP 8
    assert footprint.tp_sizes(QWEN25_05B, (1, 2, 4, 8)) == (1, 2)  # 14 heads
    # 32 heads, 8 KV heads: at TP 16 each KV head is copied to two GPUs (allowed); 12 divides neither.
    assert footprint.tp_sizes(LLAMA_8B_CONFIG, (1, 2, 12, 16)) == (1, 2, 16)
    assert footprint.tp_sizes(None, (1, 2)) == (1, 2)


def test_budget_splits_weights_and_cache_over_tensor_parallel_devices():
    weights = footprint.weights_bytes({"BF16": QWEN25_7B_PARAMS})
    one, two = (footprint.budget(QWEN25_7B, weights, tp=tp, max_model_len=8192) for tp in (1, 2))
    assert one.kv_cache == two.kv_cache == 2 * 8192 * 57344
    assert two.kv_per_device == one.kv_cache // 2
    assert two.per_device == pytest.approx((weights + one.kv_cache) / 2 * 1.1 + 1.5 * GIB, rel=1e-6)
    # Two Qwen2.5-0.5B at 4k context take ~3.6 GiB each: many share one GPU.
    small = footprint.budget(QWEN25_05B, footprint.weights_bytes({"BF16": QWEN25_05B_PARAMS}), max_model_len=4096)
    assert small.per_device / GIB == pytest.approx((0.920 + 2 * 4096 * 12288 / GIB) * 1.1 + 1.5, abs=0.01)
