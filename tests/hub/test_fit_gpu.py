"""On a real NVIDIA GPU: the fit estimate reads this host's GPUs through NVML.

Skipped, with the reason shown, on hosts without a GPU. Uses no fixture, so it also runs on a
bare GPU machine with `pytest --noconftest tests/hub/test_fit_gpu.py`.
"""

import math

import pytest

from app.devtools.hub_standin import LLAMA_8B_CONFIG, LLAMA_70B_CONFIG, llama_shaped_tensors
from app.gpu.nvml import gpu_count
from app.hub import fit
from app.hub.fit import HostMemory

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_count() == 0, reason="needs an NVIDIA GPU (NVML sees none)")]


def params(config):
    return {"BF16": sum(math.prod(shape) for _, shape in llama_shaped_tensors(config).values())}


def test_detect_reads_every_gpu():
    torch = pytest.importorskip("torch")
    host = HostMemory.detect()
    assert host.kind == "gpu"
    assert len(host.free_gb) == len(host.total_gb) == len(host.names) == gpu_count()
    assert all(0 < free <= total for free, total in zip(host.free_gb, host.total_gb))
    assert all(isinstance(name, str) and name for name in host.names)
    # The same free memory CUDA reports for device 0 (NVML and CUDA count the same bytes).
    free, total = torch.cuda.mem_get_info(0)
    assert host.total_gb[0] == pytest.approx(total / fit.GIB, abs=0.5)
    assert host.free_gb[0] == pytest.approx(free / fit.GIB, abs=1.0)


def test_verdicts_on_this_host():
    host = HostMemory.detect()
    if max(host.total_gb) < 24:
        pytest.skip("needs a GPU of at least 24 GB")
    small = fit.estimate(host, weights=fit.weights_bytes(params(LLAMA_8B_CONFIG)), config=LLAMA_8B_CONFIG)
    assert (small["verdict"], small["tensor_parallel_size"], small["enough_gpus"]) == ("fits", 1, True)
    big = fit.estimate(host, weights=fit.weights_bytes(params(LLAMA_70B_CONFIG)), config=LLAMA_70B_CONFIG)
    assert big["tensor_parallel_size"] >= 2  # 134 GiB of weights and cache: no single GPU holds it
    assert big["enough_gpus"] == (big["tensor_parallel_size"] <= gpu_count())
    if big["enough_gpus"]:
        assert big["verdict"] in ("fits", "tight")
    else:
        assert big["verdict"] == "does not fit"
