"""Fixtures for the media tests: udevd with aklited's rule, loop drives, a media root."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aklited.daemon.media import MediaWatcher
from aklited_sim.udev import LoopDrives
from tests.helpers.udevd import loop_drive_fixtures
from tests.integration.media.kit import mounts_below

# Package-scoped: the tests after these run without udev, as before.
udevd, media_rules, loops = loop_drive_fixtures("package")


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
