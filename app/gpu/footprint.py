"""What a model takes in memory (pure arithmetic; the one owner of it): weights, KV cache, overhead.

    budget per device = (weights + KV cache) / tp + overhead

- weights: parameter counts per safetensors dtype. An fp32 checkpoint served with ``dtype: auto``
  counts 2 bytes per parameter: vLLM casts fp32 weights to fp16/bf16 unless told float32.
- KV cache: per layer 2 (K and V) x KV heads x head_dim x bytes per element for each token of a
  sequence, for ``sequences`` sequences of ``context`` tokens (the entry's ``max_model_len``,
  else the model's own context). Sliding-window layers hold at most their window of a sequence
  (Gemma 2/3, Mistral v0.1), as vLLM's hybrid KV cache allocates them.
- overhead: a fixed amount per device plus a fraction of the rest (see the constants).

The model manager books the budget on the GPU(s) it places a model on and tells vLLM the KV part
exactly (``kv_cache_memory_bytes``); the hub's fit check shows the same figures before a download.
GB here means GiB (1024**3 bytes), as everywhere in llmbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

GIB = 1024**3
# Engine overhead per device. The fixed part: the CUDA context, cuBLAS/NCCL workspaces and the
# CUDA graphs vLLM captures for decode batch sizes take ~1-1.5 GiB per GPU whatever the model.
# On CPU hosts the fixed part is the engine process itself: the tiny model's vLLM CPU engine
# measured ~3.1 GiB RSS with a 1 GiB KV space (ENVIRONMENT.md), i.e. ~2 GiB besides the KV cache.
GPU_OVERHEAD_FIXED_GB = 1.5
CPU_OVERHEAD_FIXED_GB = 2.0
# The proportional part: prefill activations (vLLM's profiling peak grows with hidden size) and
# allocator fragmentation grow with the model.
OVERHEAD_FRACTION = 0.10
DEFAULT_ELEMENT_BYTES = 2  # bf16/fp16, what nearly every checkpoint on the hub uses
DEFAULT_SEQUENCES = 2  # full-length sequences the KV cache holds unless the entry says otherwise

# Bytes per element of safetensors dtypes (parameter counts from the hub are keyed by these).
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
               "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
               "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75}
TORCH_DTYPE_BYTES = {"float64": 8, "double": 8, "float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "max_seq_len", "seq_length", "n_positions",
                "n_ctx")
FLOAT32 = ("F32", "F64")  # checkpoint dtypes vLLM casts down with dtype auto

Kind = Literal["gpu", "cpu"]


def weights_bytes(parameters: Mapping[str, int], dtype: str = "auto") -> int:
    """Bytes of the weights as the engine holds them, from parameter counts per safetensors dtype.

    Unknown dtypes count 2 bytes; fp32/fp64 tensors count 2 unless the engine runs in float32."""
    total = 0.0
    for name, count in parameters.items():
        size = DTYPE_BYTES.get(name.upper(), DEFAULT_ELEMENT_BYTES)
        if name.upper() in FLOAT32 and dtype != "float32":
            size = DEFAULT_ELEMENT_BYTES
        total += count * size
    return int(total)


def text_config(config: Mapping) -> Mapping:
    """The language model's part of a config (multimodal configs nest it under ``text_config``)."""
    nested = config.get("text_config")
    return nested if "num_hidden_layers" not in config and isinstance(nested, Mapping) else config


def element_bytes(config: Mapping, dtype: str = "auto") -> int:
    """Bytes per KV cache element: the engine's dtype (fp32 configs are cast down under ``auto``)."""
    if dtype != "auto":
        return TORCH_DTYPE_BYTES[dtype]
    for cfg in (text_config(config), config):
        name = cfg.get("torch_dtype") or cfg.get("dtype")
        if isinstance(name, str) and name.removeprefix("torch.") in TORCH_DTYPE_BYTES:
            return min(TORCH_DTYPE_BYTES[name.removeprefix("torch.")], DEFAULT_ELEMENT_BYTES)
    return DEFAULT_ELEMENT_BYTES


def kv_bytes_per_token(config: Mapping, dtype: str = "auto") -> int | None:
    """KV cache bytes per token summed over all layers, or None when the config lacks the shapes."""
    cfg = text_config(config)
    layers, heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
    if not layers:
        return None
    if cfg.get("kv_lora_rank"):  # MLA (DeepSeek): one compressed latent plus the rope part per layer
        return int(layers * (cfg["kv_lora_rank"] + cfg.get("qk_rope_head_dim", 0)) * element_bytes(config, dtype))
    if not heads:
        return None
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or (cfg.get("hidden_size", 0) // heads)
    if not head_dim:
        return None
    return int(2 * layers * kv_heads * head_dim * element_bytes(config, dtype))


def sliding_layers(config: Mapping) -> tuple[int, int | None]:
    """(how many layers attend through a sliding window, the window) as the config declares them."""
    cfg = text_config(config)
    layers, window = cfg.get("num_hidden_layers") or 0, cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        sliding = sum(1 for t in types if t == "sliding_attention")
        return (sliding, window) if sliding and isinstance(window, int) and window > 0 else (0, None)
    if not isinstance(window, int) or window <= 0 or cfg.get("use_sliding_window") is False:
        return 0, None  # Qwen2 configs name a window they do not use
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1:  # Gemma 3: every pattern-th layer is global
        return layers - layers // pattern, window
    if str(cfg.get("model_type", "")).startswith("gemma2"):  # Gemma 2 alternates local and global
        return layers // 2, window
    return layers, window  # Mistral v0.1: every layer slides


def kv_bytes(config: Mapping, context: int, sequences: int = 1, dtype: str = "auto") -> int | None:
    """KV cache bytes for ``sequences`` sequences of ``context`` tokens, sliding layers as such."""
    per_token = kv_bytes_per_token(config, dtype)
    if per_token is None:
        return None
    layers = text_config(config).get("num_hidden_layers") or 1
    sliding, window = sliding_layers(config)
    per_layer = per_token / layers
    tokens = (layers - sliding) * context + sliding * min(context, window or context)
    return int(per_layer * tokens * sequences)


def model_context(config: Mapping) -> int | None:
    """The context length the model was built for (config.json), if it says."""
    cfg = text_config(config)
    return next((int(cfg[k]) for k in CONTEXT_KEYS if isinstance(cfg.get(k), int) and cfg[k] > 0), None)


def overhead_bytes(model_bytes: float, tp: int, kind: Kind) -> float:
    """Engine overhead on each of ``tp`` devices holding ``model_bytes / tp`` of weights and cache."""
    fixed = GPU_OVERHEAD_FIXED_GB if kind == "gpu" else CPU_OVERHEAD_FIXED_GB
    return model_bytes / tp * OVERHEAD_FRACTION + fixed * GIB


def per_device_bytes(model_bytes: float, tp: int, kind: Kind) -> float:
    """Memory each device needs when the model (weights + KV cache) is split over ``tp`` devices."""
    return model_bytes / tp + overhead_bytes(model_bytes, tp, kind)


def tp_sizes(config: Mapping | None, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The tensor-parallel sizes the model can be split into: vLLM needs the attention heads
    (and the KV heads, unless each GPU gets a copy of one) to divide evenly."""
    cfg = text_config(config or {})
    heads, kv_heads = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    return tuple(tp for tp in sizes
                 if (not heads or heads % tp == 0) and (not kv_heads or kv_heads % tp == 0 or tp % kv_heads == 0))


@dataclass(frozen=True)
class Budget:
    """The memory one model is given, per device of the ``tp`` it is split over (bytes)."""

    tp: int
    weights: int  # all of it (each device holds weights / tp)
    kv_cache: int  # all of it, what vLLM is told (per device: kv_cache / tp)
    overhead: int  # per device
    context: int | None
    sequences: int

    @property
    def per_device(self) -> int:
        return int((self.weights + self.kv_cache) / self.tp + self.overhead)

    @property
    def kv_per_device(self) -> int:
        return int(self.kv_cache / self.tp)

    def as_gb(self) -> dict:
        record = asdict(self)
        for key in ("weights", "kv_cache", "overhead"):
            record[f"{key}_gb"] = round(record.pop(key) / GIB, 3)
        record["per_device_gb"] = round(self.per_device / GIB, 3)
        return record


def budget(config: Mapping | None, weights: int, *, tp: int = 1, kind: Kind = "gpu", max_model_len: int | None = None,
           sequences: int = DEFAULT_SEQUENCES, dtype: str = "auto", kv_cache_bytes: int | None = None) -> Budget:
    """The budget of a model from its config and weight bytes (see the module docstring)."""
    context = model_context(config or {})
    if max_model_len:
        context = max_model_len  # vLLM refuses a longer one than the model's; its error says so
    if kv_cache_bytes is None:
        kv_cache_bytes = (kv_bytes(config, context, sequences, dtype) if config and context else None) or 0
    overhead = overhead_bytes(weights + kv_cache_bytes, tp, kind)
    return Budget(tp=tp, weights=int(weights), kv_cache=int(kv_cache_bytes), overhead=int(overhead),
                  context=context, sequences=sequences)
