"""All llmbox settings in one place: environment variables with the prefix ``LLMBOX_``.

Every path and port is settable. Relative paths are taken relative to the checkout
(``LLMBOX_ROOT_DIR``), so the box behaves the same whatever the working directory.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
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
    cluster_ip: str | None = Field(
        None, description="This node's address on the cluster network. On the head: Ray listens there and worker "
        "nodes may join (./start.sh token-for-worker); unset, the head runs single-node on 127.0.0.1. On a worker "
        "(./start.sh join): required, the address the head reaches it at."
    )
    node_name: str = Field(
        default_factory=lambda: _default_node_name(), pattern=r"^[A-Za-z0-9._-]{1,63}$",
        description="This node's name in the cluster (registry entries pin models with nodes: [name]); default: "
        "the host name.",
    )
    node_timeout_s: int = Field(
        3, ge=2, le=60, description="A node that misses heartbeats this long is lost (its models unloaded): "
        "Ray's health check on the head, checked each second."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the servers answer besides IP addresses, localhost, LLMBOX_HOST and this machine's "
        "name (comma-separated; '*' = any, e.g. behind a proxy that checks the name). Blocks DNS rebinding.",
    )

    # --- auth ----------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer keys accepted on :8000 for inference (comma-separated in the environment); "
        "prefer ./start.sh key, which stores keys hashed and can give the control scope.",
    )
    api_keys_path: Path | None = Field(
        None, description="Hashed :8000 keys with scopes (./start.sh key NAME); default: <state_dir>/api-keys."
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
    request_timeout_s: float = Field(
        900.0, gt=0, description="Deadline of one :8000 request, waiting for a load included: then 504 (or an "
        "error event and the end of the stream) and the generation is cancelled."
    )
    max_concurrent_requests: int = Field(
        512, ge=1, description=":8000 requests in flight at once (a stream counts until it ends); more get 503."
    )
    max_n: int = Field(16, ge=1, description="Largest 'n' (choices per request) :8000 accepts.")
    max_tokens_limit: int = Field(
        65536, ge=1, description="Largest 'max_tokens' / 'max_completion_tokens' :8000 accepts."
    )
    cpu_memory_budget_gb: float | None = Field(
        None, gt=0, description="On hosts without a GPU: memory that loaded engines may use (default: 75% of RAM)."
    )

    # --- what a registry entry may do on this host (app/engines/host_rules.py) --------------
    allow_remote_code: bool = Field(
        False, description="Let entries set trust_remote_code: true, so the model repo's own Python runs in the "
        "engine (and whoever holds an admin token chooses that code)."
    )
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders besides models_dir that an absolute source may be in (comma-separated absolute "
        "paths; symlinks are resolved before the check). Default: only models_dir.",
    )

    @field_validator("cluster_ip")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"LLMBOX_CLUSTER_IP: {value!r} is not an IP address (give this node's address on "
                             "the cluster network)") from None
        if value == "127.0.0.1":  # Ray rewrites it to the host's routable address in multi-node mode
            raise ValueError("LLMBOX_CLUSTER_IP: 127.0.0.1 is the single-node default; unset it, or give the "
                             "address on the cluster network (another 127.x address works on one machine)")
        return value

    @field_validator("api_keys", "allowed_hosts", "model_roots", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        # Environment variables hold one string; accept "a,b".
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("model_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_absolute():
                raise ValueError(f"LLMBOX_MODEL_ROOTS: {str(path)!r} is not an absolute path")
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        root = self.root_dir.resolve()
        self.root_dir = root
        for name in ("state_dir", "models_dir", "registry_path", "admin_tokens_path", "api_keys_path"):
            path = getattr(self, name)
            if path is not None:
                setattr(self, name, path if path.is_absolute() else root / path)
        if self.admin_tokens_path is None:
            self.admin_tokens_path = self.state_dir / "admin-tokens"
        if self.api_keys_path is None:
            self.api_keys_path = self.state_dir / "api-keys"
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

    def check_exposure(self, file_keys: int = 0) -> None:
        """Refuse to serve beyond loopback without authentication (no open write path);
        ``file_keys``: inference keys in ``api_keys_path`` (app/serving/keys.py counts them)."""
        if self.binds_beyond_loopback and not self.api_keys and not file_keys:
            raise ValueError(
                f"LLMBOX_HOST={self.host} is reachable beyond this machine but no API keys are set: "
                "create one with ./start.sh key NAME (or set LLMBOX_API_KEYS), or bind 127.0.0.1"
            )

    def check_api_exposure(self, token_count: int) -> None:
        """The management API and UI refuse to listen beyond loopback without a token configured."""
        if self.binds_beyond_loopback and token_count == 0:
            raise ValueError(
                f"LLMBOX_HOST={self.host} is reachable beyond this machine but no management API token "
                f"exists in {self.admin_tokens_path}: create one with `python -m app.api.tokens add admin` "
                "or bind 127.0.0.1"
            )


def _default_node_name() -> str:
    """The host name, cut to what a node name may hold."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63]
    return name or "node"


# The secrets a box process may find in its environment, and the processes that use each: the :8000
# keys only the driver that deploys the router (it hands the router their hashes), the Hugging Face
# token only the management API (hub calls). Everything else (Ray and its engines, the UI, the
# download child) is started without them: see without_secrets.
API_KEY_VARIABLES = ("LLMBOX_API_KEYS",)
HF_TOKEN_VARIABLES = ("LLMBOX_HF_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
JOIN_TOKEN_VARIABLES = ("LLMBOX_JOIN_TOKEN",)  # ./start.sh join only: written to the Ray token file at once
SECRET_VARIABLES = API_KEY_VARIABLES + HF_TOKEN_VARIABLES + JOIN_TOKEN_VARIABLES


def without_secrets(env: Mapping[str, str], keep: tuple[str, ...] = ()) -> dict[str, str]:
    """``env`` less every secret variable but those in ``keep``."""
    return {k: v for k, v in env.items() if k not in SECRET_VARIABLES or k in keep}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``)."""
    return Settings()
