"""Edits of the registry body that keep the YAML's comments and key order.

Each function takes the round-trip mapping under ``llmbox_registry`` (what ``RegistryStore.edit``
hands its callback) and changes only the keys it must; the store validates the result.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from app.registry.schema import ModelEntry


class ModelNotFound(KeyError):
    """No model with this id in the registry."""

    def __str__(self) -> str:
        return f"no model {self.args[0]!r} in the registry"


class ModelExists(ValueError):
    """A model with this id is already in the registry."""


def _models(body: CommentedMap) -> CommentedSeq:
    if body.get("models") is None:
        body["models"] = CommentedSeq()
    return body["models"]


def _index(body: CommentedMap, model_id: str) -> int:
    for i, item in enumerate(_models(body)):
        if isinstance(item, dict) and item.get("id") == model_id:
            return i
    raise ModelNotFound(model_id)


def add_model(body: CommentedMap, entry: ModelEntry) -> None:
    """Append a model; only the fields that differ from the defaults are written."""
    models = _models(body)
    if any(isinstance(m, dict) and m.get("id") == entry.id for m in models):
        raise ModelExists(f"model {entry.id!r} is already in the registry")
    models.append(CommentedMap(entry.model_dump(mode="json", exclude_defaults=True)))


def update_model(body: CommentedMap, model_id: str, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into a model: nested maps merge key by key, None removes a key."""
    _merge(_models(body)[_index(body, model_id)], changes)


def model_entry(body: CommentedMap, model_id: str) -> ModelEntry | None:
    """The model as it stands in ``body`` (e.g. after ``update_model``); None while it does not validate
    (the store refuses the write then, naming the field)."""
    try:
        return ModelEntry.model_validate(_models(body)[_index(body, model_id)])
    except ValueError:  # pydantic's ValidationError is one
        return None


def remove_model(body: CommentedMap, model_id: str) -> None:
    """Delete a model entry."""
    del _models(body)[_index(body, model_id)]


def _merge(target: CommentedMap, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
