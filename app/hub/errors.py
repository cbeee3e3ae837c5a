"""Hub failures a user can act on, and the one place that translates huggingface_hub's exceptions.

The API maps these to HTTP statuses (bad id 400, not found 404, gated 403, no disk 507,
hub unreachable 502); the messages are written for the person who asked.
"""

from __future__ import annotations

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


class HubError(Exception):
    """A hub operation (search, estimate, download) failed; the message says why."""


class BadRepoId(HubError, ValueError):
    """Not an ``org/name`` repo id, or a revision with path tricks ('/', '..')."""


class RepoNotFound(HubError):
    """The repo, its revision or a file in it does not exist (or is private)."""


class GatedRepo(HubError):
    """The repo is gated: it needs an HF token with access granted."""


class HubUnreachable(HubError):
    """The hub did not answer (network down, timeout, 5xx)."""


class DownloadError(HubError):
    """A download cannot start or continue."""


class NotEnoughDisk(DownloadError):
    """The models folder has too little free space for what remains to download."""


def translate(exc: BaseException, repo_id: str, revision: str | None = None) -> HubError:
    """The HubError for a huggingface_hub / network exception raised while reading ``repo_id``."""
    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, GatedRepoError):
        return GatedRepo(f"{repo_id} is gated: set an HF token whose account has been granted access")
    if isinstance(exc, RevisionNotFoundError):
        return RepoNotFound(f"revision {revision!r} of {repo_id} does not exist on the hub")
    if isinstance(exc, RemoteEntryNotFoundError):
        return RepoNotFound(f"a file of {where} is missing on the hub")
    if isinstance(exc, RepositoryNotFoundError):
        return RepoNotFound(f"{repo_id} does not exist on the hub (or is private and the token cannot see it)")
    if isinstance(exc, HFValidationError):
        return BadRepoId(str(exc).splitlines()[0])
    if isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code in (401, 403):
        return GatedRepo(f"the hub refused access to {repo_id} (HTTP {exc.response.status_code}): check the HF token")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return HubUnreachable(f"the hub answered HTTP {status} for {where}")
    if isinstance(exc, (httpx2.HTTPError, OSError)):
        return HubUnreachable(f"the hub could not be reached for {where}: {type(exc).__name__}")
    return HubError(f"reading {where} from the hub failed: {type(exc).__name__}: {exc}")
