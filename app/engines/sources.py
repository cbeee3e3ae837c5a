"""Where a registry entry's weights are on this host.

Every model is served from a local folder: a path, a folder inside an installed Python package,
or a finished download of a Hugging Face repo (see app/hub/paths.py). A repo that is not
downloaded yet is not servable: the engine never downloads on its own, so download time never
counts against a load deadline and a partial download is never loaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from app.hub import paths
from app.registry.schema import PACKAGE_PREFIX, ModelEntry


class SourceMissing(LookupError):
    """The weights named by a registry entry are not on this host."""


class NotDownloaded(SourceMissing):
    """A Hugging Face repo whose download has not finished."""


def is_hub(entry: ModelEntry) -> bool:
    """True when the weights come from a Hugging Face repo (downloaded before serving)."""
    return not entry.source.startswith(("/", PACKAGE_PREFIX))


def resolve(entry: ModelEntry, models_dir: Path | None = None) -> str:
    """The absolute local folder vLLM loads this model from; raises SourceMissing."""
    source = entry.source
    if source.startswith(PACKAGE_PREFIX):
        module, _, folder = source[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise SourceMissing(f"model {entry.id!r}: Python package {module!r} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / folder
    elif source.startswith("/"):
        path = Path(source)
    else:
        if models_dir is None:
            raise NotDownloaded(f"model {entry.id!r}: no models folder to find {source} in")
        path = paths.local_dir(models_dir, source, entry.revision)
        if not path.is_dir():
            raise NotDownloaded(f"model {entry.id!r}: {source}@{entry.revision or paths.DEFAULT_REVISION} "
                                "is not downloaded yet")
    if not path.is_dir():
        raise SourceMissing(f"model {entry.id!r}: {path} does not exist")
    return str(path)


def missing_packages(entries: Iterable[ModelEntry]) -> list[str]:
    """Why each ``package:`` source cannot be served by this install (its package is absent), one line each."""
    missing = []
    for entry in entries:
        if entry.source.startswith(PACKAGE_PREFIX):
            try:
                resolve(entry)
            except SourceMissing as exc:
                missing.append(str(exc))
    return missing
