"""The phase vocabulary: every phase has a D-Bus state and one kind."""

from __future__ import annotations

from aklited.engine.phases import IN_FLIGHT, PENDING, STATE_OF, TERMINAL, Phase
from aklited.outcomes import State


def test_state_of_covers_every_phase() -> None:
    assert set(STATE_OF) == set(Phase)
    assert set(STATE_OF.values()) <= set(State)


def test_in_flight_pending_and_terminal_are_disjoint() -> None:
    assert not IN_FLIGHT & PENDING
    assert not IN_FLIGHT & TERMINAL
    assert not PENDING & TERMINAL


def test_only_the_bookkeeping_phases_are_neither_in_flight_pending_nor_terminal() -> None:
    # verifying precedes the install row; initial-target is the factory image's own record
    assert set(Phase) - (IN_FLIGHT | PENDING | TERMINAL) == {Phase.VERIFYING, Phase.INITIAL}


def test_a_device_is_idle_once_an_install_ended() -> None:
    assert {STATE_OF[phase] for phase in TERMINAL} == {State.IDLE}


def test_an_install_in_flight_shows_installing() -> None:
    assert {STATE_OF[phase] for phase in IN_FLIGHT} == {State.INSTALLING}
