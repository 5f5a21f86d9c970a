"""Drives for the media tests: filesystem images on loop devices, and waits on events.

The loop drives and the loop-device udev rule are the simulation's (``aklited_sim.udev``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from aklited.daemon.media import Drive, DriveAdded, DriveRemoved, MediaEvent
from aklited_sim.udev import run

EVENT_TIMEOUT_S = 30


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (scripts/setup.sh installs it)")


def sparse(image: Path, size_mib: int) -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)


def make_image(fs: str, image: Path, *, label: str, tree: Path | None = None) -> Path:
    """A 16 MiB ``fs`` image labelled ``label`` holding a copy of ``tree``."""
    sparse(image, 16)
    if fs == "ext4":
        extra = ["-d", str(tree)] if tree is not None else []
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", label, *extra, image)
    elif fs == "vfat":
        need("mkfs.vfat")
        run("mkfs.vfat", "-n", label, image)
        if tree is not None:
            need("mcopy")
            for entry in sorted(tree.iterdir()):
                run("mcopy", "-s", "-i", image, entry, "::/")
    elif fs == "exfat":
        need("mkfs.exfat")
        assert tree is None, "no tool fills an exfat image without mounting it"
        run("mkfs.exfat", "-L", label, image)
    else:
        raise ValueError(fs)
    return image


def kernel_has(fs: str) -> bool:
    return fs in Path("/proc/filesystems").read_text().split()


def fuse_helper(fs: str) -> None:
    """Skip unless the FUSE helper this kernel needs for ``fs`` is installed."""
    if fs == "vfat" and not kernel_has("vfat"):
        need("fusefat")
    if fs == "exfat" and not kernel_has("exfat"):
        need("mount.exfat-fuse")


def exec_error(program: Path) -> int | None:
    """The errno of running ``program`` (None when it ran)."""
    try:
        subprocess.run([program], capture_output=True, check=False)
    except OSError as e:
        return e.errno
    return None


def devnode_of(event: MediaEvent) -> str:
    return event.drive.devnode if isinstance(event, DriveAdded) else event.devnode


async def next_event(events: AsyncIterator[MediaEvent], devnode: str) -> MediaEvent:
    """The next event about ``devnode``; events about other devices are passed over."""
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        async for event in events:
            if devnode_of(event) == devnode:
                return event
    raise AssertionError("the watcher closed")


def uuid_of(path: str | Path) -> str:
    """The filesystem UUID in an image or on a device, probed afresh (no blkid cache)."""
    return run("blkid", "-p", "-o", "value", "-s", "UUID", path)


async def added_image(events: AsyncIterator[MediaEvent], devnode: str, image: str | Path) -> Drive:
    """The drive that the filesystem in ``image`` became on ``devnode``.

    Events about an earlier medium on the same device are passed over: loop numbers are
    reused, also by other test sessions on the machine, and udev may still report the
    last user's filesystem when the watcher starts.
    """
    uuid = uuid_of(image)
    while True:
        event = await next_event(events, devnode)
        if isinstance(event, DriveAdded) and event.drive.uuid == uuid:
            return event.drive


async def all_added(events: AsyncIterator[MediaEvent], uuids: Mapping[str, str]) -> list[Drive]:
    """Every DriveAdded of the filesystems ``uuids`` names (devnode -> UUID), in order of
    arrival, once each has come."""
    seen: list[Drive] = []
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        async for event in events:
            if isinstance(event, DriveAdded) and uuids.get(event.drive.devnode) == event.drive.uuid:
                seen.append(event.drive)
            if {d.devnode for d in seen} == set(uuids):
                return seen
    raise AssertionError("the watcher closed")


async def all_removed(events: AsyncIterator[MediaEvent], devnodes: set[str]) -> None:
    gone: set[str] = set()
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        async for event in events:
            if isinstance(event, DriveRemoved) and event.devnode in devnodes:
                gone.add(event.devnode)
            if gone == devnodes:
                return
    raise AssertionError("the watcher closed")


async def removed(events: AsyncIterator[MediaEvent], devnode: str) -> None:
    event = await next_event(events, devnode)
    assert event == DriveRemoved(devnode), event


def mount_options(point: Path) -> set[str] | None:
    """The per-mount options of what is mounted at ``point`` (read independently of the
    code under test), or None when nothing is."""
    found: set[str] | None = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(point):
            found = set(fields[5].split(","))
    return found


def mounts_below(root: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]
