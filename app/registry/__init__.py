"""The model registry: schema, store (atomic/locked/versioned YAML) and comment-keeping edits."""

from app.registry.schema import EngineSettings, ModelEntry, Registry
from app.registry.store import RegistryConflict, RegistryError, RegistryInvalid, RegistryStore

__all__ = [
    "EngineSettings",
    "ModelEntry",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "RegistryInvalid",
    "RegistryStore",
]
