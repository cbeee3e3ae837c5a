"""All llmbox settings in one place: environment variables with the prefix ``LLMBOX_``.

Every path and port is settable. Relative paths are taken relative to the checkout
(``LLMBOX_ROOT_DIR``), so the box behaves the same whatever the working directory.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """llmbox configuration (env prefix ``LLMBOX_``)."""

    model_config = SettingsConfigDict(env_prefix="LLMBOX_", extra="ignore")

    # --- where things live ---------------------------------------------------------------
    root_dir: Path = Field(PROJECT_ROOT, description="The checkout; relative paths below are resolved against it.")
    state_dir: Path = Field(Path("var"), description="Runtime state: Ray temp dir, logs, pid files, engine caches.")
    models_dir: Path = Field(Path("models"), description="Downloaded and generated model weights.")
    registry_path: Path = Field(
        Path("inventory/group_vars/all/models.yml"),
        description="The model registry (YAML group_vars that Ansible reads and the API edits).",
    )
    registry_history_keep: int = Field(
        500, ge=0, description="How many past registry revisions to keep in the history folder (0 = all)."
    )

    # --- hardware ----------------------------------------------------------------------------
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="Engine build to expect; auto detects a GPU.")

    # --- network -------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP servers bind. Beyond loopback needs API keys.")
    serve_port: int = Field(8000, ge=1, le=65535, description="OpenAI-compatible endpoint (the router).")
    api_port: int = Field(8001, ge=1, le=65535, description="Management API (FastAPI).")
    ui_port: int = Field(8080, ge=1, le=65535, description="Admin UI (Flask).")
    ray_port: int = Field(6379, ge=1, le=65535, description="Ray head (GCS) port.")
    ray_dashboard_port: int = Field(8265, ge=1, le=65535, description="Ray dashboard, always on loopback.")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs Ray may schedule on (default: all).")

    # --- auth ----------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer keys accepted on :8000 (comma-separated in the environment). Empty = no auth.",
    )
    admin_tokens_path: Path | None = Field(
        None,
        description="Hashed bearer tokens of the management API and admin UI (python -m app.api.tokens); "
        "default: <state_dir>/admin-tokens.",
    )

    # --- Hugging Face --------------------------------------------------------------------------
    hf_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("LLMBOX_HF_ENDPOINT", "HF_ENDPOINT"),
        description="Hub URL (default: huggingface.co); tests point it at a local stand-in.",
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LLMBOX_HF_TOKEN", "HF_TOKEN"),
        description="Token for gated repos; used for hub calls only, never logged.",
    )
    download_min_free_gb: float = Field(
        2.0, ge=0, description="Disk space a download must leave free in the models folder."
    )

    # --- serving behaviour -----------------------------------------------------------------
    load_wait_s: float = Field(
        30.0, ge=0, description="How long a non-streaming request waits for a loading model before a 503."
    )
    load_timeout_s: float = Field(600.0, gt=0, description="A model load that takes longer fails (FAILED).")
    cpu_memory_budget_gb: float | None = Field(
        None, gt=0, description="On hosts without a GPU: memory that loaded engines may use (default: 75% of RAM)."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # Environment variables hold one string; accept "key1,key2".
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        root = self.root_dir.resolve()
        self.root_dir = root
        for name in ("state_dir", "models_dir", "registry_path", "admin_tokens_path"):
            path = getattr(self, name)
            if path is not None:
                setattr(self, name, path if path.is_absolute() else root / path)
        if self.admin_tokens_path is None:
            self.admin_tokens_path = self.state_dir / "admin-tokens"
        return self

    @property
    def binds_beyond_loopback(self) -> bool:
        """True when ``host`` is reachable from other machines."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost: assume it is reachable
            return True

    def check_exposure(self) -> None:
        """Refuse to serve beyond loopback without authentication (no open write path)."""
        if self.binds_beyond_loopback and not self.api_keys:
            raise ValueError(
                f"LLMBOX_HOST={self.host} is reachable beyond this machine but no API keys are set: "
                "set LLMBOX_API_KEYS (comma-separated) or bind 127.0.0.1"
            )


    def check_api_exposure(self, token_count: int) -> None:
        """The management API and UI refuse to listen beyond loopback without a token configured."""
        if self.binds_beyond_loopback and token_count == 0:
            raise ValueError(
                f"LLMBOX_HOST={self.host} is reachable beyond this machine but no management API token "
                f"exists in {self.admin_tokens_path}: create one with `python -m app.api.tokens add admin` "
                "or bind 127.0.0.1"
            )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
