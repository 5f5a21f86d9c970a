"""Fixtures for the media tests: udevd with aklited's rule, loop drives, a media root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aklited.daemon.media import MediaWatcher
from tests.helpers.udevd import RUNTIME_RULES, Udevd, udev_rules, udevd_fixture
from tests.integration.media.kit import LoopDrives, mounts_below, rules_text

udevd = pytest.fixture(scope="package")(udevd_fixture)


@pytest.fixture(scope="package")
def media_rules(udevd: Udevd) -> Iterator[Path]:
    """aklited's shipped rule, extended to loop devices, for the media tests.

    Package-scoped, with udevd: the tests after these run without udev, as before.

    Named after this process, so that another session's end does not take it away; a
    killed session's file is removed by the next one.
    """
    for stale in RUNTIME_RULES.glob("70-aklited-test-*.rules"):
        if not Path(f"/proc/{stale.stem.rpartition('-')[2]}").exists():
            stale.unlink(missing_ok=True)
    with udev_rules(f"70-aklited-test-{os.getpid()}.rules", rules_text()) as path:
        yield path


@pytest.fixture
def loops(media_rules: Path) -> Iterator[LoopDrives]:
    drives = LoopDrives()
    try:
        yield drives
    finally:
        drives.close()


@pytest.fixture
def media_root(tmp_path: Path, loops: LoopDrives) -> Iterator[Path]:
    """The daemon's media root. Torn down before the loop devices: a test that failed
    half-way leaves no mount behind (the tests themselves check that the code did not)."""
    root = tmp_path / "media"
    yield root
    for point in reversed(mounts_below(root)):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
async def watcher(media_rules: Path) -> AsyncIterator[MediaWatcher]:
    async with MediaWatcher() as watching:
        yield watching
