"""What a USB drive does to a device when it is pulled out, simulated on an ext4 loop drive;
and how a test holds an install in the middle of its copy to pull it out then.

Deterministic: a test waits until ostree has written a content object into the sysroot
repo's staging directory (bytes are being copied), freezes the installing process's cgroup
so the copy cannot finish meanwhile, acts (pulls the drive, sends SIGTERM), and thaws it."""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# ext4's "going down" ioctl: every later access to the filesystem fails with EIO, as when the
# USB drive under it disappears. (No device-mapper here to fail the block device itself.)
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def pull_out(mountpoint: Path) -> None:
    """Make the ext4 filesystem mounted at ``mountpoint`` fail every access from now on."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


BLKIO = Path("/sys/fs/cgroup/blkio")
# The simulated drive reads at a USB-stick pace, so the pull is surely under way when the
# drive goes: without it, a fast machine may finish the copy first.
DRIVE_BYTES_PER_S = 16 * 1024 * 1024


@contextmanager
def blkio_group() -> Iterator[Path]:
    """A (v1) blkio cgroup, with no limit until :func:`slow_reads` sets one."""
    if not (BLKIO / "blkio.throttle.read_bps_device").exists():
        pytest.skip("the blkio cgroup controller (v1) is needed to slow the drive down")
    group = BLKIO / f"aklited-test-{os.getpid()}"
    group.mkdir()
    try:
        yield group
    finally:
        group.rmdir()


def slow_reads(group: Path, device: str) -> None:
    """The members of ``group`` read ``device`` at DRIVE_BYTES_PER_S at most."""
    rdev = os.stat(device).st_rdev
    (group / "blkio.throttle.read_bps_device").write_text(
        f"{os.major(rdev)}:{os.minor(rdev)} {DRIVE_BYTES_PER_S}"
    )


@contextmanager
def slow_reads_from(device: str) -> Iterator[Path]:
    """A blkio cgroup whose members read ``device`` at DRIVE_BYTES_PER_S at most."""
    with blkio_group() as group:
        slow_reads(group, device)
        yield group


def join(group: Path, pid: int) -> None:
    """Move ``pid`` into ``group``; the processes it starts from then on are members too."""
    (group / "cgroup.procs").write_text(str(pid))


def leave(group: Path, pid: int) -> None:
    """Move ``pid`` back to the hierarchy's root group (so ``group`` can be removed)."""
    join(group.parent, pid)


def drop_caches() -> None:
    # reads must reach the drive, not the page cache, for the pull to notice it is gone
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


FREEZER = Path("/sys/fs/cgroup/freezer")


@contextmanager
def freezer_group() -> Iterator[Path]:
    """A (v1) freezer cgroup: its members stop where they are while it is FROZEN."""
    if not (FREEZER / "cgroup.procs").exists():
        pytest.skip("the freezer cgroup controller (v1) is needed to pull the drive mid-copy")
    group = FREEZER / f"aklited-test-{os.getpid()}"
    group.mkdir()
    try:
        yield group
    finally:
        set_freezer(group, "THAWED")
        group.rmdir()


def set_freezer(group: Path, state: str) -> None:
    (group / "freezer.state").write_text(state)
    while (group / "freezer.state").read_text().strip() != state:
        time.sleep(0.001)  # FREEZING: the kernel is still stopping the members


def wait_for_copying(repo: Path, running: Callable[[], bool]) -> None:
    """Until ostree has written a content object of the pull into the sysroot repo.

    ``running`` says whether the installing process still runs.
    """
    deadline = time.monotonic() + 120
    while not any((repo / "tmp").glob("staging-*/*/*.file")):
        assert running(), "install ended before any byte was copied"
        assert time.monotonic() < deadline, "install did not start copying"
        time.sleep(0.005)
