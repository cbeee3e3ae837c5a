"""The model state machine: the code's table is the one docs/design.md documents."""

import re

import pytest

from app.lifecycle.states import TRANSITIONS, BadTransition, State, check
from tests.conftest import ROOT


def documented() -> set[tuple[str, str]]:
    """The (from, to) rows of the transition table in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## The model state machine", 1)[1].split("\n## ", 1)[0]
    names = {s.value for s in State}
    rows = re.findall(r"^\| (\w+) \| (\w+) \|", section, re.M)
    return {(a, b) for a, b in rows if a in names and b in names}


def test_design_md_lists_exactly_the_transitions_of_the_code():
    code = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert documented() == code


@pytest.mark.parametrize("current", list(State))
@pytest.mark.parametrize("new", list(State))
def test_check_allows_the_table_and_refuses_the_rest(current, new):
    if new in TRANSITIONS[current]:
        check(current, new)
    else:
        with pytest.raises(BadTransition, match=f"{current.value} -> {new.value}"):
            check(current, new)
