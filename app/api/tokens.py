"""Bearer tokens of the management API and the admin UI, stored hashed (app/credentials.py).

The token file (``LLMBOX_ADMIN_TOKENS_PATH``, default ``var/admin-tokens``, mode 0600): scope
``admin`` may write; ``read`` may only read.

    python -m app.api.tokens add NAME [--scope admin|read]   prints the new token once
    python -m app.api.tokens list | remove NAME
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.credentials import Credential, CredentialFile, cli, hash_secret

SCOPES = ("admin", "read")
hash_token = hash_secret


class Principal(Credential):
    """A management API caller."""

    @property
    def can_write(self) -> bool:
        return "admin" in self.scopes


class TokenFile(CredentialFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCOPES, "llmbox_", "llmbox management API tokens")

    def verify(self, token: str) -> Principal | None:
        found = super().verify(token)
        return None if found is None else Principal(found.name, found.scopes)

    def add(self, name: str, scope: str | list[str] = "admin", models=()) -> str:  # one scope each: admin or read
        scopes = [scope] if isinstance(scope, str) else scope
        if len(scopes) != 1 or models:
            raise ValueError("a management token has one scope, admin or read, and no model list")
        return super().add(name, scopes)


def exposure_refused(settings, label: str) -> bool:
    """True (after saying why on stderr) when a server must not listen on ``settings.host``:
    beyond loopback without a token. The API and the admin UI both check this before binding."""
    try:
        settings.check_api_exposure(len(TokenFile(settings.admin_tokens_path).entries()))
    except ValueError as exc:
        print(f"[{label}] refusing to start: {exc}", file=sys.stderr)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    from app.settings import get_settings

    return cli(argv, "python -m app.api.tokens", "management API tokens", TokenFile(get_settings().admin_tokens_path),
               "admin or read", "admin", with_models=False)


if __name__ == "__main__":
    sys.exit(main())
