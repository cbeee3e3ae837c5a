"""What this host lets a registry entry do beyond what the schema allows on any host.

The schema (app/registry/schema.py) is pure: a registry validates the same everywhere (the Ansible
sync module, the tests). Two rules depend on the host's settings, so they are checked here, by one
function, where those are known: the management API before it saves a write (a 400), ./start.sh
before it starts (app/box.py check_registry), and the engine config builder
(app/engines/llm_config.py) before any engine is built, which covers every load the model manager
starts: at start, after a reconcile (any registry write, API or Ansible), for a request.

- ``trust_remote_code: true`` runs the model repo's own Python in the engine: only where the host
  allows it (LLMBOX_ALLOW_REMOTE_CODE).
- an absolute ``source`` is read by the engine as the service user: only inside the models folder or a
  folder of LLMBOX_MODEL_ROOTS, after symlinks and '..' are resolved (a link inside the models folder
  that points elsewhere is refused; so is /proc/self).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from app.registry.schema import ModelEntry

REMOTE_CODE_SETTING = "LLMBOX_ALLOW_REMOTE_CODE"
ROOTS_SETTING = "LLMBOX_MODEL_ROOTS"


class HostRules(Protocol):
    """The host facts the rules read: app.settings.Settings and llm_config.EngineHost both have them."""

    models_dir: Path | None
    model_roots: Sequence[Path]
    allow_remote_code: bool


class NotAllowedOnHost(ValueError):
    """A registry entry this host refuses to serve (the message names the setting that would allow it)."""


def remote_code_refusal(entry: ModelEntry, host: HostRules) -> str | None:
    """Why this host refuses the entry's trust_remote_code, or None."""
    if entry.engine.extra_args.get("trust_remote_code") is True and not host.allow_remote_code:
        return (f"model {entry.id!r}: trust_remote_code runs the model repo's own Python code in the engine, and "
                f"this host does not allow it: set {REMOTE_CODE_SETTING}=true (only where whoever holds an admin "
                "token may run code on the box) or remove engine.extra_args.trust_remote_code")
    return None


def source_refusal(entry: ModelEntry, host: HostRules) -> str | None:
    """Why this host refuses the entry's absolute source, or None (other sources are inside the install
    or the models folder by construction: app/engines/sources.py)."""
    if not entry.source.startswith("/"):
        return None
    real = Path(entry.source).resolve()  # symlinks and '..', as the engine would open it
    roots = [Path(r).resolve() for r in (host.models_dir, *host.model_roots) if r is not None]
    if any(real.is_relative_to(root) for root in roots):
        return None
    via = f" (it resolves to {real})" if str(real) != entry.source.rstrip("/") else ""
    return (f"model {entry.id!r}: source {entry.source}{via} is outside the models folder ({host.models_dir}) "
            f"and {ROOTS_SETTING}: put the weights there, or add their folder to {ROOTS_SETTING} "
            "(comma-separated absolute paths)")


def refusal(entry: ModelEntry, host: HostRules) -> str | None:
    """Why this host refuses ``entry``, or None."""
    return remote_code_refusal(entry, host) or source_refusal(entry, host)


def check(entry: ModelEntry, host: HostRules) -> None:
    """Raise NotAllowedOnHost when this host refuses ``entry``."""
    reason = refusal(entry, host)
    if reason:
        raise NotAllowedOnHost(reason)
