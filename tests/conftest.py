"""Shared fixtures: an isolated llmbox environment (own state dir, registry, ports) per test."""

import os
from pathlib import Path

import pytest

from app.devtools.sandbox import free_port
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def box(monkeypatch):
    """Settings (also exported as LLMBOX_* variables) of a box whose files and ports are this test's alone."""
    # A short base path: Ray's Unix sockets live under the state dir.
    base = Path(os.environ.get("LLMBOX_TEST_TMP", "/tmp")) / f"lbx{os.getpid()}-{free_port()}"
    base.mkdir(parents=True)
    variables = {
        "LLMBOX_STATE_DIR": str(base / "var"),
        "LLMBOX_MODELS_DIR": str(base / "models"),
        "LLMBOX_REGISTRY_PATH": str(base / "inventory" / "models.yml"),
        "LLMBOX_RAY_PORT": str(free_port()),
        "LLMBOX_RAY_DASHBOARD_PORT": str(free_port()),
        "LLMBOX_SERVE_PORT": str(free_port()),
        "LLMBOX_API_PORT": str(free_port()),
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings()
