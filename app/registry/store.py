"""The registry file on disk: atomic, locked, versioned writes that keep human comments.

Layout next to the registry file ``models.yml`` (dot-names: Ansible skips them in group_vars):

    .models.yml.lock        exclusive flock held by every writer
    .models.history/        one file per revision, 00000042.yml
    .models.yml.tmp-*       a write in progress (removed by the next writer if a crash left one)

A write: take the lock, re-read the file, check the caller's base revision (stale -> conflict,
nothing written), apply the change to the round-trip YAML document, validate the result, write
the new version to history and then over the file (temp file + fsync + rename + fsync of the
folder). Readers take no lock: rename is atomic, so they see the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from app.registry.schema import Registry

ROOT_KEY = "llmbox_registry"


class RegistryError(Exception):
    """Base class of registry failures."""


class RegistryInvalid(RegistryError, ValueError):
    """The registry (or an edit) does not pass the schema; the message names the fields."""


class RegistryConflict(RegistryError):
    """An edit was based on a revision that is no longer current."""

    def __init__(self, base_revision: int, current_revision: int) -> None:
        super().__init__(
            f"registry changed since revision {base_revision} (now {current_revision}): reload and edit again"
        )
        self.base_revision = base_revision
        self.current_revision = current_revision


def describe(error: ValidationError) -> str:
    """One line per problem, each starting with the field's path (``models[1].id: ...``)."""
    lines = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path or 'registry'}: {message}")
    return "; ".join(lines)


def validate(body: Any) -> Registry:
    """Validate a plain or round-trip mapping as a registry, raising RegistryInvalid."""
    try:
        return Registry.model_validate(body)
    except ValidationError as exc:
        raise RegistryInvalid(describe(exc)) from None


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, key order and quoting survive a load/dump cycle
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


class RegistryStore:
    """Reads and writes one registry file."""

    def __init__(self, path: Path, history_keep: int = 0) -> None:
        self.path = Path(path)
        self.history_keep = history_keep
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.history_dir = self.path.with_name(f".{self.path.stem}.history")

    # --- reading -------------------------------------------------------------------------
    def read(self) -> Registry:
        """The current registry, validated."""
        return validate(self._body(self._load(self.path.read_text())))

    def read_revision(self, revision: int) -> Registry:
        """A past (or the current) revision from the history folder."""
        return validate(self._body(self._load(self.revision_text(revision))))

    def revision_text(self, revision: int) -> str:
        """The YAML text of a kept revision, as it was written."""
        path = self.history_path(revision)
        if not path.exists():
            raise RegistryError(f"revision {revision} is not in the history")
        return path.read_text()

    def history(self) -> list[int]:
        """Revisions kept in the history folder, oldest first."""
        if not self.history_dir.is_dir():
            return []
        return sorted(int(p.stem) for p in self.history_dir.glob("*.yml") if p.stem.isdigit())

    # --- writing -------------------------------------------------------------------------
    def create(self, text: str) -> Registry:
        """Write the first version of the registry from YAML text; a no-op if the file exists."""
        with self._locked():
            if self.path.exists():
                return self.read()
            doc = self._load(text)
            body = self._body(doc)
            body["revision"] = 0
            registry = validate(body)
            self._commit(doc, 0)
            return registry

    def edit(self, base_revision: int, change: Callable[[CommentedMap], None]) -> Registry:
        """Apply ``change`` to the registry body (a round-trip mapping) if ``base_revision`` is current.

        Returns the new registry. Raises RegistryConflict (nothing written) when the file moved on,
        and RegistryInvalid (nothing written) when the result does not validate.
        """
        with self._locked():
            doc = self._load(self.path.read_text())
            body = self._body(doc)
            current = validate(body).revision
            if base_revision != current:
                raise RegistryConflict(base_revision, current)
            change(body)
            body["revision"] = current + 1
            registry = validate(body)
            self._commit(doc, registry.revision)
            return registry

    def restore(self, base_revision: int, revision: int) -> Registry:
        """Make a past revision's content current again, as a new revision."""
        return self.replace(base_revision, self.revision_text(revision))

    def replace(self, base_revision: int, text: str) -> Registry:
        """Make the body of the registry YAML ``text`` current, its comments included, as a new revision.

        Restore and Ansible's sync module write this way. It is an ``edit``: the new revision is
        ``base_revision + 1`` whatever the text says, and a stale base raises RegistryConflict.
        """
        new = self._body(self._load(text))

        def take_new(body: CommentedMap) -> None:
            body.clear()
            body.update(new)
            body.ca.items.update(new.ca.items)  # the comments attached to its keys

        return self.edit(base_revision, take_new)

    @classmethod
    def parse(cls, text: str) -> Registry:
        """The registry a YAML text holds, validated; nothing is read or written (RegistryInvalid)."""
        return validate(cls._body(cls._load(text)))

    # --- internals -----------------------------------------------------------------------
    @staticmethod
    def _load(text: str) -> CommentedMap:
        try:
            doc = _yaml().load(text)
        except Exception as exc:  # ruamel raises many types; all mean "not YAML"
            raise RegistryInvalid(f"registry is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get(ROOT_KEY), dict):
            raise RegistryInvalid(f"registry must be a mapping with a top-level key {ROOT_KEY!r}")
        return doc

    @staticmethod
    def _body(doc: CommentedMap) -> CommentedMap:
        return doc[ROOT_KEY]

    def history_path(self, revision: int) -> Path:
        """Where a revision is kept (it may have been pruned)."""
        return self.history_dir / f"{revision:08d}.yml"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # A writer killed mid-write leaves its temp file behind; we hold the lock, so it is dead.
                stale = [*self.path.parent.glob(f".{self.path.name}.tmp-*"), *self.history_dir.glob(".tmp-*")]
                for path in stale:
                    path.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, doc: CommentedMap, revision: int) -> None:
        out = io.StringIO()
        _yaml().dump(doc, out)
        text = out.getvalue()
        self.history_dir.mkdir(exist_ok=True)
        _atomic_write(self.history_path(revision), text, tmp_prefix=".tmp-")
        _atomic_write(self.path, text, tmp_prefix=f".{self.path.name}.tmp-")
        self._prune_history()

    def _prune_history(self) -> None:
        if self.history_keep <= 0:
            return
        for revision in self.history()[: -self.history_keep]:
            self.history_path(revision).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str, tmp_prefix: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a mix."""
    old = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix, dir=path.parent)
    try:
        # Keep the mode and owner the operator (or Ansible) gave the file.
        os.chmod(tmp, old.st_mode & 0o777 if old else 0o644)
        if old and os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
