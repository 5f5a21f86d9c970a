"""udevd for tests: the simulation's udevd, aklited's loop-drive rule and loop drives, as
pytest fixtures.

Usage in a conftest or a test module (the scope bounds how long udevd and the rule live)::

    udevd, media_rules, loops = loop_drive_fixtures("package")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from aklited_sim.udev import (
    UDEVD,
    LoopDrives,
    Udevd,
    loop_media_rules,
    running_udevd,
    udevd_answers,
)

__all__ = ["Udevd", "loop_drive_fixtures", "udevd_fixture"]


def udevd_fixture() -> Iterator[Udevd]:
    """Body of a fixture: the running udevd, or one started here and stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("udevd needs root")
    if not udevd_answers() and not UDEVD.exists():
        pytest.skip(f"{UDEVD} is not installed (apt-get install udev)")
    with running_udevd() as udevd:
        yield udevd


def loop_drive_fixtures(
    scope: Literal["module", "package", "session"],
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The fixtures ``udevd`` and ``media_rules`` (aklited's rule extended to loop devices),
    both living for ``scope``, and ``loops`` (one test's loop drives, all detached after it).

    While the rule is installed a running aklited takes any loop device for a drive: the
    scope keeps it away from tests that attach loop devices of their own.
    """
    udevd = pytest.fixture(scope=scope, name="udevd")(udevd_fixture)

    @pytest.fixture(scope=scope, name="media_rules")
    def media_rules(udevd: Udevd) -> Iterator[Path]:
        with loop_media_rules() as path:
            yield path

    @pytest.fixture(name="loops")
    def loops(media_rules: Path) -> Iterator[LoopDrives]:
        with LoopDrives() as drives:
            yield drives

    return udevd, media_rules, loops
