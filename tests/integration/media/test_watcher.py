"""MediaWatcher against a real udevd, aklited's udev rule and loop devices as drives.

Nothing here sleeps: each test waits for the event it expects. Events about one device
reach the watcher in the order udevd handled them, so "added, then removed, nothing in
between" is proven by what arrives, not by waiting for what does not. Loop numbers are
reused (also by other test sessions), so a drive is recognised by its filesystem UUID:
what udev still said about a device's previous medium is passed over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from aklited.daemon.media import DriveAdded, DriveRemoved, MediaEvent, MediaWatcher
from aklited_sim.udev import LoopDrives, settle
from tests.integration.media.kit import (
    added_image,
    all_added,
    all_removed,
    make_image,
    next_event,
    removed,
    run,
    sparse,
    uuid_of,
)

pytestmark = pytest.mark.root


@pytest.mark.parametrize(("fs", "label"), [("ext4", "EXTSTICK"), ("vfat", "VFATSTICK")])
async def test_attach_gives_one_drive_added_and_detach_removes_it(
    watcher: MediaWatcher, loops: LoopDrives, tmp_path: Path, fs: str, label: str
) -> None:
    events = watcher.events()
    image = make_image(fs, tmp_path / "stick.img", label=label)
    device = loops.attach(image)

    drive = await added_image(events, device, image)
    loops.detach(device)
    after: list[MediaEvent] = [await next_event(events, device)]
    while not isinstance(after[-1], DriveRemoved):
        after.append(await next_event(events, device))

    assert after == [DriveRemoved(device)]  # one add although udev sent several changes
    assert (drive.devnode, drive.sysname, drive.kind) == (device, Path(device).name, "disk")
    assert (drive.fs_type, drive.label, drive.uuid) == (fs, label, uuid_of(image))
    assert drive not in watcher.drives.values()  # (the number may be reused already)


async def test_coldplug_finds_a_drive_attached_before_the_watcher(
    loops: LoopDrives, tmp_path: Path
) -> None:
    image = make_image("ext4", tmp_path / "stick.img", label="COLD")
    device = loops.attach(image)
    settle()  # udev has recorded the filesystem before the watcher looks

    async with MediaWatcher() as watcher:
        events = watcher.events()
        drive = await added_image(events, device, image)
        assert watcher.drives[device] == drive
        assert (drive.fs_type, drive.label) == ("ext4", "COLD")

        loops.detach(device)
        await removed(events, device)


async def test_a_filesystem_written_later_is_announced_then_replaced(
    watcher: MediaWatcher, loops: LoopDrives, tmp_path: Path
) -> None:
    """A medium that changes under its device node (a card swapped in a reader) arrives
    as "change" events: the new filesystem is a drive, and another one replaces it."""
    events = watcher.events()
    blank = tmp_path / "blank.img"
    sparse(blank, 16)
    device = loops.attach(blank)

    # mkfs and wipefs open the device exclusively, which fails (EBUSY) while udev is still
    # probing it: each starts once udev is done. Each then announces the new medium with
    # the kernel's "change"; udev's inotify watch may add its own on the way, but it is
    # blind while it handles an event, so it is not relied on.
    settle()
    run("mkfs.ext4", "-q", "-F", "-L", "LATER", device)
    run("udevadm", "trigger", "--action=change", device)
    first = await added_image(events, device, device)
    assert (first.fs_type, first.label) == ("ext4", "LATER")

    settle()
    run("wipefs", "-q", "-a", device)  # else blkid might see both signatures
    settle()
    run("mkfs.vfat", "-n", "AGAIN", device)
    run("udevadm", "trigger", "--action=change", device)
    uuid = uuid_of(device)
    after = [await next_event(events, device)]
    while not (isinstance(after[-1], DriveAdded) and after[-1].drive.uuid == uuid):
        after.append(await next_event(events, device))
    assert after[0] == DriveRemoved(device)  # the old drive goes before the new one comes
    assert (after[-1].drive.fs_type, after[-1].drive.label) == ("vfat", "AGAIN")


async def test_a_partition_is_a_drive_and_its_disk_is_not(
    watcher: MediaWatcher, loops: LoopDrives, tmp_path: Path
) -> None:
    events = watcher.events()
    image = tmp_path / "disk.img"
    sparse(image, 32)
    run("sfdisk", "-q", image, stdin="label: dos\nstart=2048, type=c\n")
    # The filesystem goes into the partition (1 MiB in, 31 MiB long) before attaching.
    run("mkfs.vfat", "-n", "PART", "--offset=2048", image, str(31 * 1024))
    device = loops.attach(image)
    # No partition table parser in this kernel: partx adds the partition ("add" event).
    run("partx", "-a", device)
    partition = f"{device}p1"

    drive = await added_image(events, partition, partition)
    assert (drive.kind, drive.fs_type, drive.label) == ("partition", "vfat", "PART")
    assert drive.sysname == Path(partition).name
    settle()
    assert device not in watcher.drives  # it holds a partition table, not a filesystem

    loops.detach(device)
    await removed(events, partition)


async def test_a_consumer_that_falls_behind_loses_nothing(
    loops: LoopDrives, tmp_path: Path
) -> None:
    async with MediaWatcher(queue_size=2) as watcher:
        events = watcher.events()
        images = [make_image("ext4", tmp_path / f"s{i}.img", label=f"S{i}") for i in range(3)]
        drives = {loops.attach(image): uuid_of(image) for image in images}
        settle()  # every event is in the socket before the first one is read

        seen = await all_added(events, drives)
        assert sorted(d.uuid for d in seen) == sorted(drives.values())  # each once

        for device in drives:
            loops.detach(device)
        await all_removed(events, set(drives))


async def test_events_the_kernel_dropped_are_recovered_by_reading_afresh(
    loops: LoopDrives, tmp_path: Path
) -> None:
    # The smallest buffer the kernel allows holds a message or two: three drives
    # attached while the loop is busy overflow it, and the socket reports ENOBUFS.
    with structlog.testing.capture_logs() as logs:
        async with MediaWatcher(receive_buffer_bytes=1) as watcher:
            events = watcher.events()
            images = [make_image("ext4", tmp_path / f"s{i}.img", label=f"S{i}") for i in range(3)]
            drives = {loops.attach(image): uuid_of(image) for image in images}
            settle()

            seen = await all_added(events, drives)
            assert sorted(d.uuid for d in seen) == sorted(drives.values())  # each once

    assert any(entry["event"].startswith("udev events lost") for entry in logs)
