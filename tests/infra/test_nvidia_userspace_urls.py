"""Where the nvidia_userspace role looks for NVIDIA's installer (vars/main.yml, rendered as Ansible
would; no download)."""

import jinja2.nativetypes
import pytest
import yaml

from tests.infra.conftest import ROLES

EXPRESSION = yaml.safe_load((ROLES / "nvidia_userspace/vars/main.yml").read_text())["_nvidia_userspace_urls"]


def urls(version: str, override: str = "") -> list[str]:
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(EXPRESSION).render(_nvidia_userspace_version=version, nvidia_userspace_installer_url=override)


@pytest.mark.parametrize("version", ["550.127.08", "580.65.06"])
def test_datacenter_folder_first_then_the_consumer_one(version):
    assert urls(version) == [
        f"https://us.download.nvidia.com/tesla/{version}/NVIDIA-Linux-x86_64-{version}.run",
        f"https://us.download.nvidia.com/XFree86/Linux-x86_64/{version}/NVIDIA-Linux-x86_64-{version}.run",
    ]


def test_a_mirror_replaces_both():
    mirror = "https://mirror.example/nvidia/NVIDIA-Linux-x86_64-580.65.06.run"
    assert urls("580.65.06", mirror) == [mirror]
