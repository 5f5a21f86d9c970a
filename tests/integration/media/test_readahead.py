"""The read-ahead on a real drive mounted as the daemon mounts one: what it reads comes off
the drive once and is then served from the page cache, and it reads nothing the bundle's
bulk does not hold. Told apart by the loop device's own count of bytes read."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from aklited.daemon.readahead import BLOBS, OBJECTS, read_ahead
from aklited_sim.loopfs import loop_ext4
from aklited_sim.udev import run

pytestmark = pytest.mark.root

MIB = 1 << 20
DAEMON_MOUNT = "ro,nosuid,nodev,noexec,nosymfollow"
# What ext4 reads besides file data (inodes, directories, extent blocks) for this tree.
METADATA_SLACK = MIB


def bytes_read(device: str) -> int:
    """Bytes read off the block device so far."""
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[2]) * 512


def write(path: Path, size: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return size


def test_the_bulk_is_read_once_into_the_cache_and_nothing_else_is(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "usb.img", size_mib=64, mountpoint=tmp_path / "usb") as usb:
        bundle = usb.mountpoint / "update"
        bulk = [bundle / BLOBS / f"{n:064x}" for n in range(2)]
        bulk += [bundle / OBJECTS / "ab" / f"{n:062x}.filez" for n in range(3)]
        bulk += [bundle / OBJECTS / "cd" / "00.dirtree"]
        sizes = [2 * MIB, 2 * MIB, MIB, MIB, MIB + 7, 3000]
        total = sum(write(path, size) for path, size in zip(bulk, sizes, strict=True))
        write(bundle / "tuf" / "targets.json", 4096)
        secret = usb.mountpoint / "elsewhere.bin"  # on the drive, outside the bundle
        write(secret, 4 * MIB)
        fanout = bundle / OBJECTS / "cd"
        (fanout / "link.filez").symlink_to("../../../../elsewhere.bin")
        os.mkfifo(fanout / "fifo.filez")
        os.mknod(fanout / "zero.filez", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        # Mounted afresh, as the daemon mounts it: nothing of it is in the page cache.
        run("umount", usb.mountpoint)
        run("mount", "-t", "ext4", "-o", DAEMON_MOUNT, usb.device, usb.mountpoint)

        before = bytes_read(usb.device)
        tally = read_ahead(bundle, None, threading.Event())
        read = bytes_read(usb.device) - before

        assert tally.ended == "read everything"
        assert (tally.files, tally.bytes) == (len(bulk), total)
        assert total <= read < total + METADATA_SLACK
        # Served from the cache now: reading it all again reads nothing off the drive.
        cached = bytes_read(usb.device)
        for path in bulk:
            path.read_bytes()
        assert bytes_read(usb.device) == cached
        # The link's target was not read: reading it now goes to the drive.
        secret.read_bytes()
        assert bytes_read(usb.device) - cached >= 4 * MIB


def test_the_budget_bounds_what_comes_off_the_drive(tmp_path: Path) -> None:
    with loop_ext4(tmp_path / "usb.img", size_mib=64, mountpoint=tmp_path / "usb") as usb:
        bundle = usb.mountpoint / "update"
        for n in range(8):
            write(bundle / OBJECTS / f"{n:02x}" / f"{n:062x}.filez", 2 * MIB)
        run("umount", usb.mountpoint)
        run("mount", "-t", "ext4", "-o", DAEMON_MOUNT, usb.device, usb.mountpoint)

        before = bytes_read(usb.device)
        tally = read_ahead(bundle, 5 * MIB, threading.Event())
        read = bytes_read(usb.device) - before

        assert tally.ended == "its memory budget is spent"
        assert tally.bytes == 5 * MIB
        # The other 11 MiB of the bundle stayed on the drive.
        assert read < 5 * MIB + METADATA_SLACK
