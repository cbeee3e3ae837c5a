"""Where a registry entry's weights are: a local folder, or a Hugging Face repo id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from app.registry.schema import PACKAGE_PREFIX, ModelEntry


class SourceMissing(LookupError):
    """The weights named by a registry entry are not on this host."""


def resolve(entry: ModelEntry) -> str:
    """A local path (absolute) or a Hugging Face repo id for vLLM to load."""
    source = entry.source
    if source.startswith(PACKAGE_PREFIX):
        module, _, folder = source[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise SourceMissing(f"model {entry.id!r}: Python package {module!r} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / folder
        if not path.is_dir():
            raise SourceMissing(f"model {entry.id!r}: {path} does not exist")
        return str(path)
    return source


def is_local(entry: ModelEntry) -> bool:
    """True when the weights are a folder on this host (nothing to download)."""
    return entry.source.startswith(("/", PACKAGE_PREFIX))
