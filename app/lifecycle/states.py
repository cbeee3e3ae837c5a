"""The model state machine, and the outcomes the manager answers with.

The model manager is the only code that changes a state; docs/design.md draws the same table
(tests/lifecycle/test_states.py checks that the two agree).
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"  # its engine crashed; reloading (through admission, like any load)
    UNLOADING = "unloading"
    FAILED = "failed"


# Every allowed transition; anything else is a bug and raises.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.UNLOADED: frozenset({State.LOADING}),
    # UNLOADED: refused for memory, or abandoned (unloaded, removed or unserved while loading)
    State.LOADING: frozenset({State.READY, State.FAILED, State.UNLOADED}),
    # UNLOADED: its node was lost (the engine went with it: nothing to unload)
    State.READY: frozenset({State.UNLOADING, State.RESTARTING, State.UNLOADED}),
    # the reload after a crash ends like a load; FAILED also after too many crashes
    State.RESTARTING: frozenset({State.READY, State.FAILED, State.UNLOADED}),
    State.UNLOADING: frozenset({State.UNLOADED}),
    State.FAILED: frozenset({State.LOADING, State.UNLOADED}),  # retry, or reconcile/unload clears it
}

# States in which a request that wants the model waits for it (the loading contract).
PENDING = frozenset({State.LOADING, State.RESTARTING, State.UNLOADING})


class BadTransition(RuntimeError):
    """A state change that the state machine does not allow."""


def check(current: State, new: State) -> None:
    """Raise BadTransition unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise BadTransition(f"{current.value} -> {new.value} is not a model state transition")


class Outcome(str, Enum):
    """What the manager answers a request (``acquire``, ``wait``) or a control call (``load``, ``unload``)."""

    READY = "ready"  # forward now (with a lease for the fast path)
    PENDING = "pending"  # counted in; the model is loading, restarting or queued behind an unload: wait
    FAILED = "failed"  # its last load failed; no new attempt before the backoff ends
    REFUSED = "refused"  # admission refused the load (not enough memory)
    DOWNLOADING = "downloading"  # a Hugging Face model whose weights are not all here yet
    UNKNOWN = "unknown"  # not in the registry
    NOT_SERVED = "not_served"  # in the registry with serve: false
    OK = "ok"  # a control call was carried out
