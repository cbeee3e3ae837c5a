"""Imports run one way (down): a package never imports one above it, and a process imports only
what it runs (the management API never imports the serving plane, so not the router)."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Lower first. A module may import its own package and any package listed before it.
LAYERS = [
    {"app.settings", "app.openai_errors", "app.events", "app.credentials", "app.web"},
    {"app.registry"},
    {"app.gpu", "app.hub"},
    {"app.engines", "app.ray_head", "app.cluster"},
    {"app.lifecycle"},
    {"app.serving"},
    {"app.api", "app.services", "app.devtools"},
    {"app.box"},
]


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return index
    return None


def imports_of(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("app.") or name == "app"}


# Entry points (python -m ...) sit above everything they start.
MODULES = sorted(p for p in (ROOT / "app").rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_back_up(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = layer_of(module)
    assert own is not None, f"{module} is in no layer: add it to LAYERS"
    upward = sorted(name for name in imports_of(path) if (layer_of(name) or 0) > own)
    assert not upward, f"{module} imports from a layer above it: {upward}"


def test_the_management_api_process_never_imports_the_serving_plane():
    code = ("import sys; from app.api.app import create_app; from app.settings import Settings; "
            "from app.api import serving_client; from app.lifecycle import actor; "
            "create_app(Settings()); print(sorted(m for m in sys.modules if m.startswith('app.serving')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
