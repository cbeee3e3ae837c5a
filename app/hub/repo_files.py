"""Which files of a hub repo a box needs, and small JSON reads (config.json) through huggingface_hub.

Repos often carry the same weights several times (safetensors and .bin, an ``original/``
checkpoint, ONNX exports). vLLM loads one format (``load_format=auto``: safetensors if present,
else .bin, else .pt), so only that one is fetched: an 8B Llama repo is 16 GB, not 32 GB.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

# Weight formats in vLLM's order of preference; the first one present is the one fetched.
WEIGHT_FORMATS = ((".safetensors",), (".bin",), (".pt", ".pth"))
ALL_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot",
                       ".gguf", ".tflite", ".mlmodel")
# Exports and original checkpoints that vLLM never reads from a transformers-layout repo.
SKIPPED_FOLDERS = ("original", "onnx", "openvino", "coreml", "tflite", "gguf", "flax_model", "tf_model")
SMALL_JSON_LIMIT = 4 * 1024 * 1024  # config.json is a few KB; anything huge is not a config


def check_filename(name: str) -> str:
    """A repo file name that is safe to write under a local folder (no absolute path, no '..')."""
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in name.split("/"))):
        raise ValueError(f"refusing repo file name {name!r}: not a plain relative path")
    return name


def _format_of(name: str) -> tuple[str, ...] | None:
    return next((fmt for fmt in WEIGHT_FORMATS if name.endswith(fmt)), None)


def select_files(names: list[str]) -> list[str]:
    """The files to download: everything except skipped folders and weight formats vLLM won't load."""
    kept = [n for n in names if PurePosixPath(n).parts[0] not in SKIPPED_FOLDERS]
    present = {_format_of(n) for n in kept} - {None}
    chosen = next((fmt for fmt in WEIGHT_FORMATS if fmt in present), None)
    if chosen is None:  # no transformers weights (e.g. GGUF only): keep what is there
        return kept
    return [n for n in kept if not n.endswith(ALL_WEIGHT_SUFFIXES) or n.endswith(chosen)]


def weight_files(names: list[str]) -> list[str]:
    """The selected files that hold weights (their sizes estimate memory when no safetensors header is read)."""
    return [n for n in select_files(names) if n.endswith(ALL_WEIGHT_SUFFIXES)]


def read_json(api: HfApi, repo_id: str, filename: str, revision: str | None = None) -> dict:
    """A small JSON file of a repo, read over the client's HTTP session without touching the disk cache."""
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=api.endpoint)
    headers = build_hf_headers(token=api.token, library_name=api.library_name,
                               library_version=api.library_version, user_agent=api.user_agent)
    response = get_session().get(url, headers=headers, timeout=10)
    hf_raise_for_status(response)
    if len(response.content) > SMALL_JSON_LIMIT:
        raise ValueError(f"{filename} of {repo_id} is {len(response.content)} bytes: too big to be a config")
    return json.loads(response.content)
