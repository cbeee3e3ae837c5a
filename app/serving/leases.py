"""The router's fast path: leases on ready models, so a request need not ask the manager.

The manager grants a lease number with each "ready" answer to ``acquire`` and revokes the
lease before it unloads the model. While a lease is active the router forwards at once and
counts the request here; the manager reads these counts (``usage``) for eviction, the idle
reaper and status, and takes them again when it revokes, so it decides on fresh numbers.

A grant not newer than the last revocation is stale (the "ready" answer crossed the revocation
on its way) and is ignored: no request can take the fast path to a model being unloaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Lease:
    granted: int = 0
    revoked: int = 0
    in_flight: int = 0  # requests on the fast path (the manager counts the others)
    last_used: float | None = None

    def usage(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "last_used": self.last_used}


class Leases:
    """One router's leases, by model id (plain code on the router's event loop: no locks)."""

    def __init__(self) -> None:
        self._by_model: dict[str, Lease] = {}

    def begin(self, model_id: str) -> bool:
        """Count a request in on the fast path; False when the model has no active lease."""
        lease = self._by_model.get(model_id)
        if lease is None or lease.granted <= lease.revoked:
            return False
        lease.in_flight += 1
        lease.last_used = time.time()
        return True

    def end(self, model_id: str) -> None:
        """A request counted in by ``begin`` has finished."""
        lease = self._by_model[model_id]
        lease.in_flight -= 1
        lease.last_used = time.time()

    def grant(self, model_id: str, number: int) -> None:
        lease = self._by_model.setdefault(model_id, Lease())
        if number > lease.revoked:
            lease.granted = max(lease.granted, number)

    def revoke(self, model_id: str, number: int) -> dict[str, Any]:
        """Close the fast path (up to lease ``number``); returns the model's usage."""
        lease = self._by_model.setdefault(model_id, Lease())
        lease.revoked = max(lease.revoked, number)
        return lease.usage()

    def drop(self, model_id: str) -> None:
        """Close the fast path here (a forward failed: the engine may be gone); the next request
        asks the manager, which grants a new lease when the model is ready again."""
        lease = self._by_model.get(model_id)
        if lease is not None:
            lease.revoked = max(lease.revoked, lease.granted)

    def usage(self) -> dict[str, dict[str, Any]]:
        return {model_id: lease.usage() for model_id, lease in self._by_model.items()}
