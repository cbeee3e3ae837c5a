"""The model state machine allows exactly the documented transitions."""

import pytest

from app.lifecycle.states import TRANSITIONS, BadTransition, State, check

ALLOWED = {
    ("unloaded", "loading"), ("loading", "ready"), ("loading", "failed"), ("loading", "unloaded"),
    ("ready", "unloading"), ("unloading", "unloaded"), ("failed", "loading"), ("failed", "unloaded"),
}


@pytest.mark.parametrize("current", list(State))
@pytest.mark.parametrize("new", list(State))
def test_only_documented_transitions_are_allowed(current, new):
    if (current.value, new.value) in ALLOWED:
        check(current, new)
    else:
        with pytest.raises(BadTransition, match=f"{current.value} -> {new.value}"):
            check(current, new)


def test_every_state_has_a_way_out():
    assert all(TRANSITIONS[s] for s in State)
