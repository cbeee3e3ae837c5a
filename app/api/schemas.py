"""Request and response bodies of the management API (the registry's own schema is reused)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.registry.schema import ModelEntry

ModelCreate = ModelEntry  # a new model is a full registry entry


class ModelUpdate(BaseModel):
    """Fields to change; a field sent as null goes back to its default, one left out is kept."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, description="Hugging Face repo id, absolute path or package:<module>/<dir>.")
    revision: str | None = Field(None, description="Hugging Face revision.")
    task: Literal["generate", "embed"] | None = None
    serve: bool | None = Field(None, description="Offer it on :8000.")
    always_on: bool | None = Field(None, description="Load at start; never reaped.")
    idle_timeout_s: int | None = Field(None, ge=0, description="Idle unload time; 0 = never.")
    memory_gb: float | None = Field(None, gt=0, description="Memory the loaded model needs.")
    engine: dict[str, Any] | None = Field(None, description="Engine settings to merge (see the registry schema).")
    nodes: list[str] | None = Field(None, description="Only these cluster nodes may load it; [] or null: any.")


class WriteResult(BaseModel):
    """What a registry write did."""

    revision: int = Field(description="The registry revision after the write (also the new ETag).")
    applied: dict[str, Any] = Field(description="The reconcile result, or why it could not run.")
    downloads: list[dict[str, Any]] = Field(default_factory=list, description="Downloads this write started.")
    model: dict[str, Any] | None = None


class RegisterDownload(BaseModel):
    """Add a finished download to the registry."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Model id (default: the repo's name).")
    task: Literal["generate", "embed"] | None = Field(None, description="Default: from the repo's task tag.")
    serve: bool = Field(True, description="Serve it at once.")
    idle_timeout_s: int | None = Field(None, ge=0)
    engine: dict[str, Any] | None = Field(None, description="Engine settings (see the registry schema).")


class StartDownload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(description="org/name")
    revision: str = Field("main", description="Branch, tag or commit.")
