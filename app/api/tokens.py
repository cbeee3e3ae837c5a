"""Bearer tokens for the management API, stored hashed (never the token itself).

The token file (``LLMBOX_ADMIN_TOKENS_PATH``, default ``var/admin-tokens``, mode 0600) holds one
line per token: ``<name> <scope> sha256:<hex>``. Scope ``admin`` may write; ``read`` may only
read. Tokens are 32 random bytes, so a plain SHA-256 is enough (no password stretching needed);
comparison is constant-time.

    python -m app.api.tokens add NAME [--scope admin|read]   prints the new token once
    python -m app.api.tokens list | remove NAME
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("admin", "read")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (recorded in events) and what it may do."""

    name: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == "admin"


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """Read, add and remove hashed tokens."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # Parsed files by path, with the (inode, mtime, size) they were read at: every API request checks a
    # token, and the file changes only when a token is added or removed.
    _parsed: dict[Path, tuple[tuple[int, int, int], list[tuple[str, str, str]]]] = {}

    def entries(self) -> list[tuple[str, str, str]]:
        """(name, scope, hash) of every token; a missing file means none."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rewrite is a new file (rename)
        cached = self._parsed.get(self.path)
        if cached and cached[0] == version:
            return list(cached[1])
        rows = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#") and parts[1] in SCOPES:
                rows.append((parts[0], parts[1], parts[2]))
        self._parsed[self.path] = (version, rows)
        return list(rows)

    def verify(self, token: str) -> Principal | None:
        """The principal this token belongs to, or None."""
        digest = hash_token(token)
        found = None
        for name, scope, stored in self.entries():
            if hmac.compare_digest(digest, stored):  # check all, so timing says nothing
                found = Principal(name, scope)
        return found

    def add(self, name: str, scope: str = "admin") -> str:
        """Create a token; returns it (the only time it exists in clear)."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"token name {name!r}: use letters, digits, '.', '_', '@', '-'")
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
        token = "llmbox_" + secrets.token_urlsafe(32)
        self._rewrite(lambda rows: [r for r in rows if r[0] != name] + [(name, scope, hash_token(token))])
        return token

    def remove(self, name: str) -> bool:
        before = len(self.entries())
        self._rewrite(lambda rows: [r for r in rows if r[0] != name])
        return len(self.entries()) < before

    def _rewrite(self, change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = change(self.entries())
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write("# llmbox management API tokens: name scope hash (see app/api/tokens.py)\n")
                handle.writelines(f"{n} {s} {h}\n" for n, s, h in rows)
            os.replace(tmp, self.path)


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

    parser = argparse.ArgumentParser(prog="python -m app.api.tokens", description="Manage API tokens.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a token and print it once")
    add.add_argument("name")
    add.add_argument("--scope", choices=SCOPES, default="admin")
    sub.add_parser("list", help="names and scopes (tokens are not stored)")
    remove = sub.add_parser("remove", help="revoke a token")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    tokens = TokenFile(get_settings().admin_tokens_path)
    if args.command == "add":
        print(tokens.add(args.name, args.scope))
    elif args.command == "list":
        for name, scope, _ in tokens.entries():
            print(f"{name}\t{scope}")
    elif not tokens.remove(args.name):
        print(f"no token named {args.name!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
