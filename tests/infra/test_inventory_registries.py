"""The example inventory pushes a registry the host's kind of install can serve: the GPU flow never
gets the CPU-only embedding package, and OpenWebUI is pointed at an always-on model that exists."""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2
import pytest
from ruamel.yaml import YAML

from app.registry.schema import PACKAGE_PREFIX
from app.registry.store import validate
from tests.infra.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import lock  # noqa: E402

INVENTORY = ROOT / "inventory"


def container_var(name: str, gpu: bool) -> str:
    """A group_vars/llmbox/main.yml setting as Ansible renders it for a host with llmbox_gpu = gpu."""
    settings = YAML(typ="safe").load((INVENTORY / "group_vars/llmbox/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["bool"] = bool
    return env.from_string(settings[name]).render(llmbox_gpu=gpu, inventory_dir=str(INVENTORY))


@pytest.mark.parametrize(("kind", "gpu"), [("cpu", False), ("gpu", True)])
def test_each_kind_of_host_gets_a_registry_its_install_can_serve(kind, gpu):
    path = Path(container_var("llmbox_app_registry_src", gpu))
    assert path == INVENTORY / "registries" / f"{kind}.yml"
    registry = validate(YAML(typ="safe").load(path.read_text())["llmbox_registry"])
    installed = lock.read_lock(lock.lock_path(kind))  # what that kind's install puts in the venv
    for entry in registry.models:
        if entry.source.startswith(PACKAGE_PREFIX):
            module = entry.source[len(PACKAGE_PREFIX):].split("/")[0]
            assert lock.normalise(module) in installed, f"{path.name}: {entry.id} needs {module}, not in the {kind} install"
    # OpenWebUI's embedding model is this registry's always-on embedding model.
    embed = container_var("openwebui_embedding_model", gpu)
    assert any(e.id == embed and e.always_on and e.task == "embed" for e in registry.models), embed


def test_the_gpu_registry_embeds_with_nomic_and_its_task_prefixes():
    registry = validate(YAML(typ="safe").load((INVENTORY / "registries/gpu.yml").read_text())["llmbox_registry"])
    nomic = next(e for e in registry.models if e.always_on)
    assert nomic.source == "nomic-ai/nomic-embed-text-v1.5" and "trust_remote_code" not in nomic.engine.extra_args
    # OpenWebUI knows a query from a document, the router does not (it takes documents): OpenWebUI
    # sends nomic's own prefixes, and the router leaves a text that has one as it is.
    assert container_var("openwebui_embedding_query_prefix", True) == nomic.embed_prefixes.query == "search_query: "
    assert container_var("openwebui_embedding_content_prefix", True) == nomic.embed_prefixes.document
