"""The model state machine; the model manager is the only code that changes a state."""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


# Every allowed transition; anything else is a bug and raises.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.UNLOADED: frozenset({State.LOADING}),
    State.LOADING: frozenset({State.READY, State.FAILED, State.UNLOADED}),  # UNLOADED: refused for memory
    State.READY: frozenset({State.UNLOADING}),
    State.UNLOADING: frozenset({State.UNLOADED}),
    State.FAILED: frozenset({State.LOADING, State.UNLOADED}),  # retry, or reconcile/unload clears it
}


class BadTransition(RuntimeError):
    """A state change that the state machine does not allow."""


def check(current: State, new: State) -> None:
    """Raise BadTransition unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise BadTransition(f"{current.value} -> {new.value} is not a model state transition")
