"""How much disk a commit needs in the sysroot, estimated before anything is copied.

The estimate walks the commit in the bundle repo (``ostree ls -R -C``: every file with its
size and content checksum), keeps the objects the sysroot repo does not have yet, and rounds
each to whole file-system blocks, since a bare repo stores every object as its own file. A
deployment adds little on top: files are hard links into the repo, but every directory is new
and the kernel and initramfs are copied to ``/boot``. A margin covers what the walk cannot see
(``/etc`` merge, bootloader entries, journal of the file system), and ostree's own reserve
(``min-free-space-percent``/``-size`` of the repo config, which makes a pull fail half-way)
must stay free afterwards.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aklited.rootfs.repo import object_path

BLOCK = 4096
# What the walk cannot see: 5 % of the estimate plus a fixed 8 MiB.
MARGIN_RATIO = 0.05
MARGIN_FIXED = 8 * 1024 * 1024
# ostree's default for core.min-free-space-percent.
DEFAULT_RESERVE_PERCENT = 3

_BOOT_FILE = re.compile(r"^/usr/lib/modules/[^/]+/(vmlinuz|initramfs\.img|dtb/.*)$")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?B)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass(frozen=True, slots=True)
class TreeListing:
    """What a commit references, from ``ostree ls -R -C``."""

    files: dict[str, int]  # content checksum -> size in bytes (symlinks: 0)
    metadata: frozenset[tuple[str, str]]  # (checksum, "dirtree" | "dirmeta")
    directories: int
    boot_bytes: int  # kernel, initramfs and device trees, copied to /boot on deploy


@dataclass(frozen=True, slots=True)
class SpaceEstimate:
    """The space a pull and deploy of one commit needs on the sysroot file system.

    Attributes:
        missing_objects: objects the sysroot repo lacks (content, metadata and the commit).
        missing_bytes: the content those objects hold, in bytes.
        required_bytes: what the pull and deploy will use, block-rounded, with the margin.
        free_bytes: available on the sysroot file system now.
        reserved_bytes: what ostree insists stays free (its min-free-space setting).
    """

    missing_objects: int
    missing_bytes: int
    required_bytes: int
    free_bytes: int
    reserved_bytes: int

    @property
    def fits(self) -> bool:
        """True when the update fits and leaves ostree's reserve free."""
        return self.free_bytes - self.required_bytes >= self.reserved_bytes


def parse_tree_listing(text: str) -> TreeListing:
    """Parse ``ostree ls -R -C COMMIT`` output.

    Raises:
        ValueError: a line that is not a listing entry.
    """
    files: dict[str, int] = {}
    metadata: set[tuple[str, str]] = set()
    directories = 0
    boot_bytes = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        kind = line[:1]
        if kind == "d":
            fields = line.split(maxsplit=6)
            if len(fields) != 7:
                raise ValueError(f"unexpected directory entry: {line!r}")
            metadata.add((fields[4], "dirtree"))
            metadata.add((fields[5], "dirmeta"))
            directories += 1
        elif kind in {"-", "l"}:
            fields = line.split(maxsplit=5)
            if len(fields) != 6:
                raise ValueError(f"unexpected file entry: {line!r}")
            size = int(fields[3]) if kind == "-" else 0
            files[fields[4]] = size
            path = fields[5].split(" -> ", 1)[0] if kind == "l" else fields[5]
            if kind == "-" and _BOOT_FILE.match(path):
                boot_bytes += size
        else:
            raise ValueError(f"unexpected listing entry: {line!r}")
    return TreeListing(
        files=files,
        metadata=frozenset(metadata),
        directories=directories,
        boot_bytes=boot_bytes,
    )


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


@dataclass(frozen=True, slots=True)
class FreeSpace:
    """The sysroot file system's free space, and what ostree insists stays free."""

    free_bytes: int
    reserved_bytes: int


def free_space(repo: Path) -> FreeSpace:
    """What is free now on ``repo``'s file system, and ostree's reserve there. Blocking."""
    fs = os.statvfs(repo)
    return FreeSpace(
        free_bytes=fs.f_bavail * fs.f_frsize,
        reserved_bytes=reserved_bytes(repo, total_bytes=fs.f_blocks * fs.f_frsize),
    )


def estimate(repo: Path, listing: TreeListing, free: FreeSpace | None = None) -> SpaceEstimate:
    """Estimate what pulling and deploying the listed commit needs in ``repo``. Blocking.

    Args:
        repo: the sysroot repo (``<sysroot>/ostree/repo``), mode ``bare``.
        listing: the commit's tree, from :func:`parse_tree_listing`.
        free: the free space to weigh it against (default: as it is now); a pull that
            has begun to write passes what was free before it began.
    """
    missing_objects = 1  # the commit object itself
    missing_bytes = 0
    used = BLOCK
    for checksum, size in listing.files.items():
        # lexists: a symlink object in a bare repo is a symlink, possibly dangling.
        if not os.path.lexists(object_path(repo, checksum, "file")):
            missing_objects += 1
            missing_bytes += size
            used += _blocks(size)
    for checksum, kind in listing.metadata:
        if not object_path(repo, checksum, kind).exists():
            missing_objects += 1
            used += BLOCK
    used += listing.directories * BLOCK + _blocks(listing.boot_bytes)
    required = used + int(used * MARGIN_RATIO) + MARGIN_FIXED
    free = free or free_space(repo)
    return SpaceEstimate(
        missing_objects=missing_objects,
        missing_bytes=missing_bytes,
        required_bytes=required,
        free_bytes=free.free_bytes,
        reserved_bytes=free.reserved_bytes,
    )


def reserved_bytes(repo: Path, *, total_bytes: int) -> int:
    """ostree's free-space reserve for ``repo`` (``core.min-free-space-size`` or ``-percent``).

    Blocking. An unreadable or odd setting falls back to ostree's default of 3 %.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(repo / "config", encoding="utf-8")
    except (OSError, configparser.Error):
        return total_bytes * DEFAULT_RESERVE_PERCENT // 100
    size = parser.get("core", "min-free-space-size", fallback=None)
    if size is not None and (match := _SIZE.match(size)):
        unit = match[2].upper() if match[2] else None
        return int(match[1]) * _UNITS[unit]
    percent = parser.get("core", "min-free-space-percent", fallback=None)
    if percent is not None and percent.strip().isdigit():
        return total_bytes * min(int(percent), 99) // 100
    return total_bytes * DEFAULT_RESERVE_PERCENT // 100
