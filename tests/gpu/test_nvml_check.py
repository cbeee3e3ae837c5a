"""A GPU host whose NVML fails is refused at start with NVML's own words, not served on the CPU.

NVML is replaced (LLMBOX_NVML_MODULE) by a stand-in that fails the way a container does after a host
driver upgrade ("Driver/library version mismatch"); the kernel driver's /proc file by a fixture.
"""

from __future__ import annotations

import sys

import pytest

from app.gpu import nvml

MISMATCH = '''
class NVMLError(Exception):
    pass

def nvmlInit():
    raise NVMLError("Driver/library version mismatch")
'''
KERNEL = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n"


@pytest.fixture
def mismatched_nvml(tmp_path, monkeypatch):
    (tmp_path / "mismatched_nvml.py").write_text(MISMATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(nvml.NVML_MODULE_VARIABLE, "mismatched_nvml")
    version = tmp_path / "version"
    monkeypatch.setattr(nvml, "KERNEL_DRIVER_VERSION", version)
    yield version
    sys.modules.pop("mismatched_nvml", None)


def test_auto_on_a_host_with_the_kernel_driver_but_a_failing_nvml_is_refused(mismatched_nvml):
    mismatched_nvml.write_text(KERNEL)
    with pytest.raises(RuntimeError) as err:
        nvml.check_usable("auto")
    message = str(err.value)
    assert "NVML) fails (Driver/library version mismatch) although the NVIDIA kernel driver is loaded" in message
    assert "580.65.06" in message and "rerun the container play" in message and "LLMBOX_DEVICE=cpu" in message


def test_gpu_set_explicitly_with_a_failing_nvml_is_refused(mismatched_nvml):
    with pytest.raises(RuntimeError, match="although LLMBOX_DEVICE is gpu"):
        nvml.check_usable("gpu")


def test_hosts_without_the_kernel_driver_or_set_to_cpu_are_left_alone(mismatched_nvml):
    nvml.check_usable("auto")  # no /proc/driver/nvidia: a CPU host
    mismatched_nvml.write_text(KERNEL)
    nvml.check_usable("cpu")  # the operator chose the CPU
