"""The admin UI's configuration, derived from llmbox's settings (``LLMBOX_*``).

- ``API_URL``: the management API, on the address it binds (``LLMBOX_HOST``; a wildcard
  address means this machine) and ``LLMBOX_API_PORT``.
- ``SECRET_KEY``: signs the session cookie; generated once into ``<state_dir>/ui-secret``
  (mode 0600) so sessions survive a restart and no default secret exists.
- ``ALLOWED_HOSTS``: the Host names it answers (app/web/hosts.py; blocks DNS rebinding).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from app.services import local_url
from app.web.hosts import allowed_names
from app.settings import Settings


def api_url(settings: Settings) -> str:
    """Where the UI reaches the management API."""
    return local_url(settings, settings.api_port)


def secret_key(state_dir: Path) -> str:
    """The session-signing key from ``<state_dir>/ui-secret``, created (0600) on first use."""
    path = Path(state_dir) / "ui-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if len(key) < 32:
            raise ValueError(f"{path} holds no usable key (delete it and a new one is made)") from None
        return key
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def from_settings(settings: Settings) -> dict:
    """Flask config for these settings."""
    return {"API_URL": api_url(settings), "SECRET_KEY": secret_key(settings.state_dir),
            "ALLOWED_HOSTS": allowed_names(settings.host, settings.allowed_hosts)}
