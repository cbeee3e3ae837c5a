"""A model larger than one node on a real GPU cluster: pipeline stages on two nodes, tensor parallel
inside each, placed by the manager and answering through the head's :8000.

It needs what no single machine here has: two GPU nodes joined into one box (./start.sh join) and
vLLM's CUDA build. Point it at such a box with LLMBOX_TEST_GPU_CLUSTER=http://HEAD:8000 (and
LLMBOX_TEST_API=http://HEAD:8001 with LLMBOX_TEST_API_TOKEN, an admin token): it adds a tiny
model with ``pipeline_parallel_size: 2`` and removes it afterwards. Skipped with the reason
anywhere else; tests/lifecycle/test_cluster.py covers the placement decisions.
"""

from __future__ import annotations

import os

import httpx
import pytest

from app.gpu.nvml import gpu_count

CLUSTER = os.environ.get("LLMBOX_TEST_GPU_CLUSTER")
API = os.environ.get("LLMBOX_TEST_API")
TOKEN = os.environ.get("LLMBOX_TEST_API_TOKEN", "")

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(gpu_count() == 0, reason="needs an NVIDIA GPU (NVML sees none)"),
              pytest.mark.skipif(not (CLUSTER and API), reason="needs a box of two GPU nodes: set "
                                 "LLMBOX_TEST_GPU_CLUSTER, LLMBOX_TEST_API and LLMBOX_TEST_API_TOKEN")]


def test_a_pipeline_parallel_model_spans_two_nodes_and_answers_through_the_head(tmp_path):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    source = os.environ.get("LLMBOX_TEST_PP_SOURCE", "Qwen/Qwen2.5-0.5B-Instruct")
    entry = {"id": "pp-test", "source": source, "serve": True,
             "engine": {"tensor_parallel_size": 1, "pipeline_parallel_size": 2, "max_model_len": 1024}}
    etag = httpx.get(f"{API}/api/registry", headers=headers, timeout=30).headers["etag"]
    httpx.post(f"{API}/api/models", json=entry, headers={**headers, "If-Match": etag},
               timeout=60).raise_for_status()
    try:
        answer = httpx.post(f"{CLUSTER}/v1/chat/completions", timeout=900, json={
            "model": "pp-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        status = httpx.get(f"{API}/api/status", headers=headers, timeout=30).json()
        view = next(m for m in status["models"] if m["id"] == "pp-test")
        assert len({stage["node"] for stage in view["stages"]}) == 2, view
    finally:
        etag = httpx.get(f"{API}/api/registry", headers=headers, timeout=30).headers["etag"]
        httpx.delete(f"{API}/api/models/pp-test", headers={**headers, "If-Match": etag}, timeout=120)
