"""A model's memory budget from its registry entry and its local files, before its engine starts.

The weights come from the safetensors headers (exact parameter counts per dtype; a header is a
few KB, read without touching the tensors), else from the sizes of the .bin/.pt files; the KV
cache and overhead from config.json (app/gpu/footprint.py does the arithmetic, the same the
hub's fit check shows). ``None`` when the folder says too little: admission then falls back to
the registry's ``memory_gb`` or its default.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Literal

from app.gpu import footprint
from app.hub.repo_files import SMALL_JSON_LIMIT, weight_files
from app.registry.schema import ModelEntry

HEADER_LIMIT = 100 * 1024 * 1024  # safetensors caps its JSON header at 100 MB


def safetensors_parameters(folder: Path) -> dict[str, int] | None:
    """Parameter counts per dtype over the folder's .safetensors files, or None if there are none."""
    counts: dict[str, int] = {}
    files = sorted(folder.rglob("*.safetensors"))
    if not files:
        return None
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > HEADER_LIMIT:
                raise ValueError(f"{path.name}: a {length}-byte header is not a safetensors header")
            header = json.loads(handle.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
    return counts


def weights_on_disk(folder: Path, dtype: str) -> int | None:
    """Bytes of weights as the engine will hold them: from the headers, else the weight files' sizes."""
    counts = safetensors_parameters(folder)
    if counts is not None:
        return footprint.weights_bytes(counts, dtype)
    names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    files = weight_files(names)
    return sum((folder / n).stat().st_size for n in files) if files else None


def read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not path.is_file() or path.stat().st_size > SMALL_JSON_LIMIT:
        return None
    return json.loads(path.read_text())


def model_budget(entry: ModelEntry, folder: str | Path, kind: Literal["gpu", "cpu"]) -> footprint.Budget | None:
    """The budget of ``entry`` served from ``folder`` (see the module docstring)."""
    folder = Path(folder)
    engine = entry.engine
    weights = weights_on_disk(folder, engine.dtype)
    if weights is None:
        return None
    # Weights and KV cache split over every GPU: TP splits each layer, pipeline stages the layers.
    tp = engine.tensor_parallel_size * engine.pipeline_parallel_size
    sequences = 1 if entry.task == "embed" else engine.concurrent_sequences or footprint.DEFAULT_SEQUENCES
    declared_kv = engine.kv_cache_memory_bytes * tp if engine.kv_cache_memory_bytes else None
    return footprint.budget(read_config(folder), weights, tp=tp, kind=kind, max_model_len=engine.max_model_len,
                            sequences=sequences, dtype=engine.dtype, kv_cache_bytes=declared_kv)
