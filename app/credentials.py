"""Named bearer credentials stored hashed, one owner for the file format of both kinds the box has:
management API tokens (app/api/tokens.py: scopes admin, read) and :8000 API keys
(app/serving/keys.py: scopes inference, control, optionally limited to some models).

A file (mode 0600) holds one line per credential: ``<name> <scope>[,<scope>...] sha256:<hex>
[<model>,<model>...]``. Secrets are 32 random bytes, so a plain SHA-256 is enough (no password
stretching); comparison is constant-time and checks every entry, so timing says nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MODEL_LIST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}(,[A-Za-z0-9][A-Za-z0-9._:-]{0,63})*$")


@dataclass(frozen=True)
class Credential:
    """Who is calling (the name, recorded in events and logs), what it may do, and on which models
    (empty: all)."""

    name: str
    scopes: frozenset[str]
    models: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return ",".join(sorted(self.scopes))

    def may_use(self, model_id: str) -> bool:
        return not self.models or model_id in self.models


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


class CredentialFile:
    """Read, add and remove the hashed credentials of one file; the scopes it knows are given."""

    # Parsed files by path, with the (inode, mtime, size) they were read at: every request checks a
    # credential, and the file changes only when one is added or removed (always by a rename).
    _parsed: dict[Path, tuple[tuple[int, int, int], list[tuple[Credential, str]]]] = {}

    def __init__(self, path: Path, scopes: tuple[str, ...], prefix: str, title: str) -> None:
        self.path, self.scopes, self.prefix, self.title = Path(path), scopes, prefix, title

    def _entries(self) -> list[tuple[Credential, str]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._parsed.get(self.path)
        if cached and cached[0] == version:
            return cached[1]
        rows = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if line.startswith("#") or len(parts) not in (3, 4):
                continue
            scopes = frozenset(parts[1].split(","))
            if not scopes <= set(self.scopes):
                continue  # a scope this version does not know grants nothing
            models = tuple(parts[3].split(",")) if len(parts) == 4 else ()
            rows.append((Credential(parts[0], scopes, models), parts[2]))
        self._parsed[self.path] = (version, rows)
        return rows

    def entries(self) -> list[Credential]:
        return [credential for credential, _ in self._entries()]

    def verify(self, secret: str) -> Credential | None:
        """The credential this secret belongs to, or None."""
        digest = hash_secret(secret)
        found = None
        for credential, stored in self._entries():
            if hmac.compare_digest(digest, stored):
                found = credential
        return found

    def add(self, name: str, scopes: tuple[str, ...] | list[str], models: tuple[str, ...] | list[str] = ()) -> str:
        """Create (or replace) a credential; returns its secret, the only time it exists in clear."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"name {name!r}: use letters, digits, '.', '_', '@', '-' (at most 64)")
        unknown = [s for s in scopes if s not in self.scopes]
        if unknown or not scopes:
            raise ValueError(f"scope {','.join(unknown) or '(none)'!r}: expected one or more of {', '.join(self.scopes)}")
        if models and not _MODEL_LIST.fullmatch(",".join(models)):
            raise ValueError(f"models {','.join(models)!r}: model ids separated by commas")
        secret = self.prefix + secrets.token_urlsafe(32)
        line = f"{name} {','.join(sorted(set(scopes)))} {hash_secret(secret)}" + (f" {','.join(models)}" if models else "")
        self._rewrite(lambda lines: [l for l in lines if l.split()[0] != name] + [line])
        return secret

    def remove(self, name: str) -> bool:
        before = len(self.entries())
        self._rewrite(lambda lines: [l for l in lines if l.split()[0] != name])
        return len(self.entries()) < before

    def _rewrite(self, change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                lines = [l for l in self.path.read_text().splitlines() if l.strip() and not l.startswith("#")]
            except FileNotFoundError:
                lines = []
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"# {self.title}: name scopes hash [models] (see app/credentials.py)\n")
                handle.writelines(f"{l}\n" for l in change(lines))
            os.replace(tmp, self.path)


def cli(argv: list[str] | None, prog: str, what: str, credentials: CredentialFile, scope_help: str,
        default_scope: str, with_models: bool) -> int:
    """``add NAME [--scope S[,S]] [--models a,b] | list | remove NAME`` for one credential file."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=f"Manage {what}.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create one and print it once")
    add.add_argument("name")
    add.add_argument("--scope", default=default_scope, help=scope_help)
    if with_models:
        add.add_argument("--models", default="", help="only these models (comma-separated; default: all)")
    sub.add_parser("list", help="names and scopes (the secrets are not stored)")
    remove = sub.add_parser("remove", help="revoke one")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            models = [m for m in getattr(args, "models", "").split(",") if m]
            print(credentials.add(args.name, args.scope.split(","), models))
        elif args.command == "list":
            for entry in credentials.entries():
                print("\t".join([entry.name, entry.scope] + ([",".join(entry.models) or "(all models)"]
                                                           if with_models else [])))
        elif not credentials.remove(args.name):
            print(f"none named {args.name!r}", file=sys.stderr)
            return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
