"""udevd for tests: the simulation's udevd as a pytest fixture body.

Usage in a conftest::

    udevd = pytest.fixture(scope="session")(udevd_fixture)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aklited_sim.udev import UDEVD, Udevd, running_udevd, udevd_answers

__all__ = ["Udevd", "udevd_fixture"]


def udevd_fixture() -> Iterator[Udevd]:
    """Body of a fixture: the running udevd, or one started here and stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("udevd needs root")
    if not udevd_answers() and not UDEVD.exists():
        pytest.skip(f"{UDEVD} is not installed (apt-get install udev)")
    with running_udevd() as udevd:
        yield udevd
