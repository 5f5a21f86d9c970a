"""What a USB drive does to a device when it is pulled out, simulated on an ext4 loop drive."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

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
